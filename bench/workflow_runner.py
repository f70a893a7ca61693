"""Loading scans/s through the workflow runner (handle + state journal + event append, each committed) vs the
raw baseline of appending the same events to the same store one commit each, same run.

Route: 150 stops, 300 packages (a full van). Prints one JSON line with both rates, the ratio, the pure
state-machine rate (no I/O) and the journal size per input.
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
    snapshot,
)
from device.workflow.runner import WorkflowRunner  # noqa: E402

STOPS, PER_STOP = 150, 2
BLOCK = Block.from_dict({"id": "B1", "station": "DXX1", "starts_at": "2026-05-04T08:00:00Z",
                         "ends_at": "2026-05-04T16:00:00Z"})
ROUTE = Route("B1", 1, tuple(
    Stop(f"S{i}", f"{i} Main St", str(i), 47.6 + i * 1e-4, -122.3, tuple(Package(f"TBA{i:05d}{j}")
                                                                          for j in range(PER_STOP)))
    for i in range(STOPS)))
SETUP = [OffersReceived((BLOCK,)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(ROUTE)]
SCANS = [PackageScanned(p) for p in ROUTE.manifest()]


async def runner_rate(path: Path) -> tuple[float, int]:
    with EventStore(path) as store:
        runner = await WorkflowRunner.open(store, Role.VEHICLE)
        for item in SETUP:
            await runner.apply(item)
        started = time.perf_counter()
        for item in SCANS:
            await runner.apply(item)
        elapsed = time.perf_counter() - started
        journal = len(json.dumps(store.state.get("workflow")))
    return len(SCANS) / elapsed, journal


def baseline_rate(path: Path) -> float:
    events = [Event(EventType.PACKAGE_SCANNED, {"package": s.code, "loaded": i, "total": len(SCANS)}, block="B1")
              for i, s in enumerate(SCANS)]
    with EventStore(path) as store:
        started = time.perf_counter()
        for event in events:
            store.append(event)
        return len(events) / (time.perf_counter() - started)


def handle_rate() -> float:
    wf = VehicleWorkflow()
    for item in SETUP:
        wf.handle(item)
    started = time.perf_counter()
    for item in SCANS:
        wf.handle(item)
        snapshot(wf)  # the runner serializes the state once per input too
    return len(SCANS) / (time.perf_counter() - started)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rate, journal = asyncio.run(runner_rate(Path(tmp) / "runner.db"))
        baseline = baseline_rate(Path(tmp) / "raw.db")
    print(json.dumps({"bench": "workflow_runner", "stops": STOPS, "packages": len(SCANS),
                      "runner_scans_per_s": round(rate, 1), "baseline_appends_per_s": round(baseline, 1),
                      "ratio": round(rate / baseline, 3), "handle_and_snapshot_per_s": round(handle_rate(), 1),
                      "journal_bytes": journal}))


if __name__ == "__main__":
    main()
