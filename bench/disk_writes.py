"""Bytes written to the storage per event over a van's day, through the real agent path, vs raw sqlite3.

The day: 8 h of GPS fixes every 5 s (each a stored breadcrumb), a 150-stop block (2 packages a stop): offers,
claim, route, 300 loading scans, then at every stop an arrival, a proof photo (its index row and its checked
event), a signature at every 5th stop, and a departure. It goes through `Agent.on_fix`, `Agent.submit` and
`Agent.photo` on a real EventStore and WorkflowRunner (the photo's capture and vision are stood in for: their
file is not the store's writing). The raw baseline appends the very rows the agent stored with plain sqlite3,
the same schema and PRAGMAs, one commit each.

Counters: as root, the store lives on a fresh ext4 filesystem on a loop device and the device's own count of
sectors written is read (data, WAL, checkpoints and the filesystem's journal: what the card would see), after
a sync; `/proc/self/io` write_bytes (what this process dirtied) is printed beside it, and used alone when no
loop device can be made. Wear: a 32 GB card rated for CARD_PE_CYCLES program/erase cycles (a consumer TLC card)
can take 32 GB x cycles written; years = that / (bytes a day x 365).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.agent import Agent, ProofPhoto  # noqa: E402
from device.contract.domain import Block, Instruction, Package, Role, Route, Stop, Verdict  # noqa: E402
from device.store import EventStore  # noqa: E402
from device.store.database import PRAGMAS, open_database  # noqa: E402
from device.store.outbox import INSERT_EVENT  # noqa: E402
from device.workflow import (  # noqa: E402
    ArrivedAt,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    LoadingDone,
    OffersReceived,
    RouteReceived,
    SignatureCaptured,
)
from device.workflow.runner import WorkflowRunner  # noqa: E402
from firmware_bridge.fix import Fix, FixMode  # noqa: E402

DAY_S, FIX_EVERY_S = 8 * 3600, 5
STOPS, PER_STOP, SIGNATURE_EVERY = 150, 2, 5
CARD_BYTES = 32 * 10**9
CARD_PE_CYCLES = 1000  # program/erase cycles a consumer TLC SD card is rated for (industrial pSLC: ~30,000)
IMAGE_BYTES = 512 * 1024 * 1024  # the loop device's filesystem
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=timezone.utc)
STROKES = (((10.0, 10.0), (20.0, 15.0), (30.0, 12.0)), ((12.0, 30.0), (28.0, 30.0)))


class Counters:
    """Bytes written so far: the loop device's sectors (None without one) and this process's write_bytes."""

    def __init__(self, device: str | None) -> None:
        self.device = device

    def read(self) -> tuple[int | None, int]:
        os.sync()
        device = None
        if self.device is not None:
            fields = Path(f"/sys/block/{self.device}/stat").read_text().split()
            device = int(fields[6]) * 512  # sectors written
        io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return device, int(io["write_bytes"])


@contextlib.contextmanager
def storage(workdir: Path) -> Iterator[tuple[Path, Counters]]:
    """A fresh ext4 on a loop device when this runs as root with losetup; else a plain directory."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        yield workdir, Counters(None)
        return
    image, mount = workdir / "card.img", workdir / "card"
    with open(image, "wb") as f:
        f.truncate(IMAGE_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()
    try:
        mount.mkdir()
        subprocess.run(["mount", loop, str(mount)], check=True)
        try:
            yield mount, Counters(Path(loop).name)
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)


def make_route() -> Route:
    return Route("B1", 1, tuple(
        Stop(f"S{i:03d}", f"{i} Main St", str(i), 47.6 + i * 1e-4, -122.3, tuple(
            Package(f"TBA{i:05d}{j}", Instruction.HAND_TO_RESIDENT if i % SIGNATURE_EVERY == 0 and j == 0
                    else Instruction.LEAVE_AT_DOOR, signature_required=i % SIGNATURE_EVERY == 0 and j == 0)
            for j in range(PER_STOP)))
        for i in range(STOPS)))


class Dispatch:
    """The cloud's side of a claim for the day (granted); nothing else of the cloud link is exercised."""

    online = True

    async def claim(self, block_id: str, request_id: str) -> ClaimResult:
        return ClaimResult(block_id, True)

    def kick(self) -> None:
        pass


async def van_day(data: Path) -> int:
    """Replay the day through the agent; returns the number of events stored."""
    route = make_route()
    block = Block("B1", "DXX1", T0, T0 + timedelta(hours=9))
    store = EventStore(data / "events.db")
    try:
        runner = await WorkflowRunner.open(store, Role.VEHICLE)
        photos = iter(range(10**6))

        async def take_photo(stop: Stop, fix: Fix | None) -> ProofPhoto:
            return ProofPhoto(f"ph-{next(photos)}", f"/photos/{stop.id}.jpg", "ab" * 32, Verdict.MATCH,
                              stop.house_number, 0.95, (10, 10, 40, 60), 12.0)

        agent = Agent(store=store, runner=runner, role=Role.VEHICLE, cloud=Dispatch(),  # type: ignore[arg-type]
                      take_photo=take_photo)
        fixes = DAY_S // FIX_EVERY_S
        loading_ends = fixes // 20  # the first ~25 minutes at the station
        stop_every = (fixes - loading_ends) // STOPS
        codes = list(route.manifest())
        per_fix = -(-len(codes) // loading_ends)
        for k in range(fixes):
            moment = T0 + timedelta(seconds=k * FIX_EVERY_S)
            await agent.on_fix(Fix(moment, 47.6 + k * 1e-6, -122.3, FixMode.FIX_3D, speed=8.0))
            if k == 0:
                await agent.submit(OffersReceived((block,)))
                await agent.submit(ClaimRequested("B1"))
                async with asyncio.timeout(10):  # the claim's task: Dispatch grants it
                    while agent.runner.workflow.phase != "claimed":
                        await asyncio.sleep(0)
                await agent.submit(RouteReceived(route))
            if k < loading_ends:
                for code in codes[k * per_fix:(k + 1) * per_fix]:
                    await agent.scan(code)
            elif k == loading_ends:
                await agent.submit(LoadingDone())
            elif (k - loading_ends) % stop_every == 0 and (k - loading_ends) // stop_every <= STOPS:
                stop = route.stops[(k - loading_ends) // stop_every - 1]
                await agent.submit(ArrivedAt(stop.id))
                await agent.photo(stop.id)
                if any(p.signature_required for p in stop.packages):
                    await agent.submit(SignatureCaptured(stop.id, strokes=STROKES))
                await agent.submit(DepartedFrom(stop.id))
        assert agent.runner.workflow.phase == "block_complete", agent.runner.workflow.phase
        return store.stats().last_seq
    finally:
        store.close()


def raw_day(source: Path, target: Path) -> None:
    """The agent's stored rows, appended again by plain sqlite3 with the same schema and PRAGMAs, one commit each."""
    src = sqlite3.connect(str(source))
    rows = src.execute("SELECT seq, id, type, lane, ts, mono, block, stop, body, hash, stored_at FROM events "
                       "ORDER BY seq").fetchall()
    src.close()
    db, _ = open_database(target)
    db.close()
    conn = sqlite3.connect(str(target), isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    for row in rows:
        conn.execute("BEGIN")
        conn.execute(INSERT_EVENT, row)
        conn.execute("COMMIT")
    conn.close()


def years(bytes_a_day: float) -> float:
    return CARD_BYTES * CARD_PE_CYCLES / (bytes_a_day * 365)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-") as tmp, storage(Path(tmp)) as (where, counters):
        (where / "agent").mkdir()
        (where / "raw").mkdir()
        before = counters.read()
        events = asyncio.run(van_day(where / "agent"))
        middle = counters.read()
        raw_day(where / "agent" / "events.db", where / "raw" / "events.db")
        after = counters.read()
    sources = [("device", 0, "loop device, ext4: sectors written")] if counters.device else []
    sources.append(("process", 1, "/proc/self/io write_bytes"))
    for name, i, what in sources:
        agent, raw = middle[i] - before[i], after[i] - middle[i]
        print(json.dumps({
            "bench": "disk_writes", "counter": name, "source": what, "events": events,
            "figure": "agent_bytes_per_event", "baseline": "raw_bytes_per_event",
            "agent_bytes_per_event": round(agent / events), "raw_bytes_per_event": round(raw / events),
            "ratio_agent_to_raw": round(agent / raw, 3),
            "agent_mb_per_day": round(agent / 1e6, 1), "raw_mb_per_day": round(raw / 1e6, 1),
            "card": f"32 GB, {CARD_PE_CYCLES} P/E cycles",
            "agent_years_to_wear_out": round(years(agent), 1), "raw_years_to_wear_out": round(years(raw), 1),
        }), flush=True)


if __name__ == "__main__":
    main()
