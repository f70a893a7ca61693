"""A van agent that dies by SIGKILL mid-route: `python -m tests.helpers.workflow_child DB MODE`.

MODE "mid_route": claims, loads, delivers S1, arrives at S2, then kill -9 (after the commit).
MODE "journal_only": as mid_route, then takes a photo at S2 but dies after the journal was written and before
its events were appended (the crash window the runner's journal covers).
MODE "withdrawn": as mid_route, then the cloud takes block B1 back (committed), then kill -9.
MODE "withdraw_journal_only": as mid_route, then the withdrawal's journal entry is written, its event is not.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys

from device.contract.domain import Role
from device.store import EventStore
from device.workflow import (
    ArrivedAt,
    BlockWithdrawn,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    RouteReceived,
    SignatureCaptured,
)
from device.workflow.runner import WorkflowRunner
from tests.helpers.workflow import STROKES, block, photo, route

MID_ROUTE = [OffersReceived((block("B1"),)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(route()),
             *[PackageScanned(c) for c in ("P1", "P2", "P3", "P4", "P5")], LoadingDone(), ArrivedAt("S1"),
             photo("S1"), SignatureCaptured("S1", strokes=STROKES), DepartedFrom("S1"), ArrivedAt("S2")]


async def main(db: str, mode: str) -> None:
    store = EventStore(db)
    runner = await WorkflowRunner.open(store, Role.VEHICLE)
    for item in MID_ROUTE:
        outcome = await runner.apply(item)
        assert outcome.accepted, outcome.rejection
    if mode in ("journal_only", "withdraw_journal_only"):
        item = photo("S2", photo_id="ph-s2") if mode == "journal_only" else BlockWithdrawn("B1")
        outcome = runner.workflow.handle(item)
        runner._write_journal(list(outcome.events))
        print("journal", ",".join(e.id for e in outcome.events), flush=True)
    elif mode == "withdrawn":
        outcome = await runner.apply(BlockWithdrawn("B1"))
        assert outcome.accepted, outcome.rejection
        print("committed", flush=True)
    else:
        print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
