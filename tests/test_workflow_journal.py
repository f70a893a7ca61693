"""The workflow's journal: each input's changes (not the whole state) are journaled and replay to the same state;
an accepted input can be taken back exactly; the runner's journal entries do not grow with the route, and its
snapshots bound the journal."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from device.contract.domain import Package, Role, Route, Stop
from device.store import EventStore
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    DockWorkflow,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    Phase,
    RouteReceived,
    SignatureCaptured,
    StageScan,
    StagingPlan,
    StagingPlanReceived,
    restore,
    snapshot,
)
from device.workflow.changes import apply_delta
from device.workflow.runner import STATE_KEY, WorkflowRunner
from tests.helpers.workflow import STROKES, FakeClock, block, drive_to, photo, route
from tests.test_workflow_vehicle import POOL

FULL_BLOCK = [OffersReceived((block("B1"),)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(route()),
              *[PackageScanned(c) for c in ("P1", "P2", "P3", "P4", "P5")], LoadingDone(), ArrivedAt("S1"),
              photo("S1"), SignatureCaptured("S1", strokes=STROKES), DepartedFrom("S1"), ArrivedAt("S2"),
              photo("S2"), DepartedFrom("S2"), ArrivedAt("S3"), photo("S3")]


def replay(delta: object) -> dict:
    return json.loads(json.dumps(delta))  # what the store keeps


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(list(Phase)), st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=60))
def test_deltas_replay_to_the_same_state(start: Phase, indexes: list[int]) -> None:
    clock = FakeClock()
    wf = drive_to(start, clock)
    assert wf.drain_changes() is None  # a state just adopted: only a snapshot describes it
    replica = restore(snapshot(wf))
    for index in indexes:
        wf.handle(POOL[index])
        clock.advance(1)
        apply_delta(replica.state, replay(wf.drain_changes()))
        assert replica.state == wf.state and snapshot(replica) == snapshot(wf)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(Phase)), st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=40))
@example(Phase.CLAIMING, [13])  # a lost claim drops its offer: the undo puts it back in its place, not last
def test_undo_last_takes_an_accepted_input_back_exactly(start: Phase, indexes: list[int]) -> None:
    wf = drive_to(start)
    for index in indexes:
        before = snapshot(wf)
        outcome = wf.handle(POOL[index])
        if outcome.accepted:
            wf.undo_last()
            assert snapshot(wf) == before
            wf.handle(POOL[index])


def test_dock_deltas_replay_including_a_restaging_plan() -> None:
    wf = DockWorkflow(clock=FakeClock())
    wf.drain_changes()
    replica = restore(snapshot(wf))
    other = Route("R2", 1, (Stop("T1", "1 Side St", "1", 47.6, -122.3, (Package("Q1"),)),))
    plan1 = StagingPlan.from_routes(1, (route(block_id="R1"), other))
    plan2 = StagingPlan.from_routes(2, (route(block_id="R2"),))
    for item in (StagingPlanReceived(plan1), StageScan("P1"), StageScan("Q1"), StageScan("P1"), StageScan("X"),
                 StagingPlanReceived(plan2), StageScan("P2")):
        wf.handle(item)
        apply_delta(replica.state, replay(wf.drain_changes()))
        assert replica.state == wf.state and snapshot(replica) == snapshot(wf)


def big_route(stops: int) -> Route:
    return Route("B1", 1, tuple(Stop(f"S{i:04d}", f"{i} Main St", str(i), 47.6, -122.3,
                                     (Package(f"PK{i:05d}a"), Package(f"PK{i:05d}b"))) for i in range(stops)))


def test_a_scan_journals_the_same_bytes_on_a_small_and_a_big_route(tmp_path: Path) -> None:
    async def scan_entry(stops: int) -> int:
        with EventStore(tmp_path / f"r{stops}.db") as store:
            runner = await WorkflowRunner.open(store, Role.VEHICLE, clock=FakeClock())
            for item in (OffersReceived((block("B1"),)), ClaimRequested("B1"), ClaimResult("B1", True),
                         RouteReceived(big_route(stops))):
                await runner.apply(item)
            await runner.apply(PackageScanned("PK00001a"))
            return len(json.dumps(store.state.journal(STATE_KEY)[-1][1]))
    small, big = asyncio.run(scan_entry(3)), asyncio.run(scan_entry(300))
    assert small == big < 200  # what the scan changed, whatever the route


def test_snapshots_bound_the_journal_and_the_restart_replays_to_the_live_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        with EventStore(tmp_path / "events.db") as store:
            runner = await WorkflowRunner.open(store, Role.VEHICLE, clock=FakeClock(), snapshot_min_bytes=0)
            for item in FULL_BLOCK:
                assert (await runner.apply(item)).accepted
            assert runner.workflow.phase is Phase.BLOCK_COMPLETE
            entries = store.state.journal(STATE_KEY)
            assert len(entries) < len(FULL_BLOCK) // 2  # snapshots replaced the older entries
            assert store.state.get(STATE_KEY)["journal_upto"] + len(entries) == entries[-1][0]
            again = await WorkflowRunner.open(store, Role.VEHICLE, clock=FakeClock())
            assert again.workflow.state == runner.workflow.state
            assert store.state.journal(STATE_KEY) == []  # opening compacts
    asyncio.run(scenario())
