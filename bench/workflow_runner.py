"""Loading scans/s through the workflow runner (handle + journal entry + event append, one commit per input) vs the
raw baseline of appending the same events to the same store one commit each, same run.

Routes of 50, 150 and 300 stops (2 packages each; 150 is a full van). Prints one JSON line per size with both
rates, the ratio, the pure state-machine rate (no I/O), the journal bytes per input and the snapshot's size, and
a last line with the 300-stop rate over the 50-stop rate (1.0 = the cost does not grow with the route).
Rounds are interleaved and the best of each side kept: the disk's mood affects both alike.
"""
from __future__ import annotations

import asyncio
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

SIZES, PER_STOP, ROUNDS = (50, 150, 300), 2, 3
BLOCK = Block.from_dict({"id": "B1", "station": "DXX1", "starts_at": "2026-05-04T08:00:00Z",
                         "ends_at": "2026-05-04T16:00:00Z"})


def make_route(stops: int) -> Route:
    return Route("B1", 1, tuple(
        Stop(f"S{i}", f"{i} Main St", str(i), 47.6 + i * 1e-4, -122.3,
             tuple(Package(f"TBA{i:05d}{j}") for j in range(PER_STOP)))
        for i in range(stops)))


def setup(route: Route) -> list[object]:
    return [OffersReceived((BLOCK,)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(route)]


async def runner_rate(path: Path, route: Route) -> tuple[float, float, int]:
    scans = [PackageScanned(p) for p in route.manifest()]
    with EventStore(path) as store:
        runner = await WorkflowRunner.open(store, Role.VEHICLE)
        for item in setup(route):
            await runner.apply(item)
        await runner._snapshot()  # the route's snapshot: the scans' journal starts empty
        started = time.perf_counter()
        for item in scans:
            await runner.apply(item)
        elapsed = time.perf_counter() - started
        entries = store.state.journal(STATE_KEY)
        journal = sum(len(json.dumps(body, separators=(",", ":"))) for _, body in entries) / max(1, len(entries))
        snapshot = len(json.dumps(store.state.get(STATE_KEY)))
    return len(scans) / elapsed, journal, snapshot


def baseline_rate(path: Path, route: Route) -> float:
    codes = list(route.manifest())
    events = [Event(EventType.PACKAGE_SCANNED, {"package": c, "loaded": i, "total": len(codes)}, block="B1")
              for i, c in enumerate(codes)]
    with EventStore(path) as store:
        started = time.perf_counter()
        for event in events:
            store.append(event)
        return len(events) / (time.perf_counter() - started)


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
    rates = {}
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-", dir=Path.cwd()) as tmp:
        for stops in SIZES:
            route = make_route(stops)
            runs, baselines = [], []
            for rnd in range(ROUNDS):
                baselines.append(baseline_rate(Path(tmp) / f"raw-{stops}-{rnd}.db", route))
                runs.append(asyncio.run(runner_rate(Path(tmp) / f"runner-{stops}-{rnd}.db", route)))
            rate, journal, snapshot = max(runs)
            baseline = max(baselines)
            rates[stops] = rate
            print(json.dumps({"bench": "workflow_runner", "stops": stops, "packages": stops * PER_STOP,
                              "runner_scans_per_s": round(rate, 1), "baseline_appends_per_s": round(baseline, 1),
                              "ratio": round(rate / baseline, 3), "handle_per_s": round(handle_rate(route), 1),
                              "journal_bytes_per_input": round(journal), "snapshot_bytes": snapshot}), flush=True)
    print(json.dumps({"bench": "workflow_runner", "figure": "flatness", "flatness": round(rates[300] / rates[50], 3),
                      "runner_300_per_s": round(rates[300], 1), "runner_50_per_s": round(rates[50], 1)}))


if __name__ == "__main__":
    main()
