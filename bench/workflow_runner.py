"""Loading scans/s through the workflow runner (handle + journal entry + event append, one commit per input) vs the
raw baseline of appending the same events to the same store one commit each, same run.

Routes of 50, 150 and 300 stops (2 packages each; 150 is a full van); the first SCANS scans of each route's
loading are timed. All sides run in lockstep: per chunk of CHUNK inputs, each route's runner, then the async
baseline and the sync baseline, in an order that rotates, on stores open side by side; so a disk shared with
other work slows every side alike, and each side's rate is its inputs over the time its own chunks took over
ROUNDS rounds. The baseline appends from the event loop as the runner does (`append_async`: the same hand-off to
the store's writer and back); the synchronous `append` is measured beside it (`ratio_vs_sync`).

Prints one JSON line per route size with the rates, the ratio, the pure state-machine rate (no I/O), the journal
bytes per input and the snapshot's size, and a last line with the 300-stop rate over the 50-stop rate
(1.0 = the cost does not grow with the route).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.contract.domain import Block, Event, EventType, Package, Role, Route, Stop  # noqa: E402
from device.store import EventStore  # noqa: E402
from device.workflow import (  # noqa: E402
    ClaimRequested,
    ClaimResult,
    OffersReceived,
    PackageScanned,
    RouteReceived,
    VehicleWorkflow,
)
from device.workflow.runner import STATE_KEY, WorkflowRunner  # noqa: E402

SIZES, PER_STOP, ROUNDS, CHUNK, SCANS = (50, 150, 300), 2, 5, 20, 100
BLOCK = Block.from_dict({"id": "B1", "station": "DXX1", "starts_at": "2026-05-04T08:00:00Z",
                         "ends_at": "2026-05-04T16:00:00Z"})


def make_route(stops: int) -> Route:
    return Route("B1", 1, tuple(
        Stop(f"S{i}", f"{i} Main St", str(i), 47.6 + i * 1e-4, -122.3,
             tuple(Package(f"TBA{i:05d}{j}") for j in range(PER_STOP)))
        for i in range(stops)))


def setup(route: Route) -> list[object]:
    return [OffersReceived((BLOCK,)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(route)]


def baseline_events(n: int) -> list[Event]:
    return [Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:06d}", "loaded": i, "total": n}, block="B1")
            for i in range(n)]


Shapes = dict[int, tuple[float, int]]  # route size -> (journal bytes per input, snapshot bytes)


async def one_round(workdir: Path, routes: dict[int, Route]) -> tuple[dict[object, float], Shapes]:
    """Seconds per side (each route size, "async", "sync") over SCANS inputs each; journal and snapshot sizes."""
    seconds: dict[object, float] = {side: 0.0 for side in (*SIZES, "async", "sync")}
    with contextlib.ExitStack() as stack:
        stores = {side: stack.enter_context(EventStore(workdir / f"{side}.db")) for side in seconds}
        runners = {}
        for stops in SIZES:
            runner = runners[stops] = await WorkflowRunner.open(stores[stops], Role.VEHICLE)
            for item in setup(routes[stops]):
                await runner.apply(item)
            await runner._snapshot()  # the route's snapshot: the scans' journal starts empty
        scans = {stops: [PackageScanned(p) for p in routes[stops].manifest()][:SCANS] for stops in SIZES}
        events = {"async": baseline_events(SCANS), "sync": baseline_events(SCANS)}
        sides = list(seconds)
        for n, i in enumerate(range(0, SCANS, CHUNK)):
            for side in sides[n % len(sides):] + sides[:n % len(sides)]:
                started = time.perf_counter()
                if side == "async":
                    for event in events["async"][i:i + CHUNK]:
                        await stores[side].append_async([event])
                elif side == "sync":
                    for event in events["sync"][i:i + CHUNK]:
                        stores[side].append(event)
                else:
                    for item in scans[side][i:i + CHUNK]:  # type: ignore[index]
                        await runners[side].apply(item)  # type: ignore[index]
                seconds[side] += time.perf_counter() - started
        shapes = {}
        for stops in SIZES:
            entries = stores[stops].state.journal(STATE_KEY)
            journal = sum(len(json.dumps(body, separators=(",", ":"))) for _, body in entries) / max(1, len(entries))
            shapes[stops] = (journal, len(json.dumps(stores[stops].state.get(STATE_KEY))))
    return seconds, shapes


def handle_rate(route: Route) -> float:
    wf = VehicleWorkflow()
    for item in setup(route):
        wf.handle(item)
    scans = [PackageScanned(p) for p in route.manifest()]
    started = time.perf_counter()
    for item in scans:
        wf.handle(item)
        wf.drain_changes()  # the runner drains the input's changes into its journal entry too
    return len(scans) / (time.perf_counter() - started)


def main() -> None:
    routes = {stops: make_route(stops) for stops in SIZES}
    total: dict[object, float] = {}
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-", dir=Path.cwd()) as tmp:
        for rnd in range(ROUNDS):
            workdir = Path(tmp) / str(rnd)
            workdir.mkdir()
            seconds, shapes = asyncio.run(one_round(workdir, routes))
            for side, s in seconds.items():
                total[side] = total.get(side, 0.0) + s
    rate = {side: ROUNDS * SCANS / s for side, s in total.items()}
    for stops in SIZES:
        print(json.dumps({"bench": "workflow_runner", "stops": stops, "packages": stops * PER_STOP,
                          "runner_scans_per_s": round(rate[stops], 1),
                          "baseline_appends_per_s": round(rate["async"], 1),
                          "ratio": round(rate[stops] / rate["async"], 3),
                          "sync_baseline_appends_per_s": round(rate["sync"], 1),
                          "ratio_vs_sync": round(rate[stops] / rate["sync"], 3),
                          "handle_per_s": round(handle_rate(routes[stops]), 1),
                          "journal_bytes_per_input": round(shapes[stops][0]), "snapshot_bytes": shapes[stops][1]}),
              flush=True)
    print(json.dumps({"bench": "workflow_runner", "figure": "flatness", "flatness": round(rate[300] / rate[50], 3),
                      "runner_300_per_s": round(rate[300], 1), "runner_50_per_s": round(rate[50], 1)}))


if __name__ == "__main__":
    main()
