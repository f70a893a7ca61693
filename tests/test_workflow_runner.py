"""The runner against a real event store: events committed before feedback, restart after kill -9, a failed
commit rolled back."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from device.contract.domain import EventType, Role
from device.contract.position import Position
from device.store import EventStore
from device.workflow import (
    ArrivedAt,
    BlockWithdrawn,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    DockPhase,
    ExceptionReason,
    ExceptionReported,
    Feedback,
    OffersReceived,
    PackageScanned,
    Phase,
    RejectReason,
    StageScan,
    StagingPlan,
    StagingPlanReceived,
)
from device.workflow.runner import CURRENT_BLOCK_KEY, STATE_KEY, WorkflowRunner
from firmware_bridge.fix import Fix, FixMode
from tests.helpers.workflow import T0, FakeClock, block, drive_to, photo, route

REPO = Path(__file__).resolve().parent.parent


def kill_child(db: Path, mode: str) -> str:
    result = subprocess.run([sys.executable, "-m", "tests.helpers.workflow_child", str(db), mode], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    return result.stdout.strip()


def test_events_are_in_the_store_when_apply_returns(tmp_path: Path) -> None:
    async def scenario() -> None:
        with EventStore(tmp_path / "events.db") as store:
            runner = await WorkflowRunner.open(store, Role.DOCK, clock=FakeClock())
            fix = Fix(time=T0, lat=47.61, lon=-122.34, mode=FixMode.FIX_3D)
            await runner.apply(StagingPlanReceived(StagingPlan.from_routes(1, (route(block_id="R1"),))))
            outcome = await runner.apply(StageScan("P1"), fix=Position(fix.to_dict()))
            assert outcome.feedback == (Feedback.GOOD_SCAN,)
            stored = store.events()
            assert [d["type"] for d in stored] == ["dock.plan_received", "dock.staged"]
            assert stored[-1]["id"] == outcome.events[0].id and stored[-1]["fix"]["lat"] == 47.61
            # A rejected person input is stored as input.rejected; the state is untouched.
            rejected = await runner.apply(StageScan(""))
            assert rejected.rejection.reason is RejectReason.INVALID_INPUT
            assert store.events()[-1]["type"] == "input.rejected"
            reopened = await WorkflowRunner.open(store, Role.DOCK, clock=FakeClock())
            assert reopened.workflow.state.staged == {"P1": "R1"}  # the journal holds the state
            assert store.verify_chain().ok
    asyncio.run(scenario())


def test_resume_after_kill_9_mid_route(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    assert kill_child(db, "mid_route") == "committed"

    async def resume() -> None:
        with EventStore(db) as store:
            runner = await WorkflowRunner.open(store, Role.VEHICLE)
            wf = runner.workflow
            assert wf.phase is Phase.AT_STOP and wf.state.current_stop == "S2"
            assert wf.state.stops["S1"].done and not wf.state.stops["S2"].done
            assert store.state.get(CURRENT_BLOCK_KEY) == "B1"
            before = len(store.events())
            for item in (photo("S2"), DepartedFrom("S2"), ArrivedAt("S3"), photo("S3")):
                outcome = await runner.apply(item)
                assert outcome.accepted, outcome.rejection
            assert wf.phase is Phase.BLOCK_COMPLETE
            docs = store.events()
            assert len(docs) > before and store.verify_chain().ok
            assert not [i for i, n in Counter(d["id"] for d in docs).items() if n > 1]
            completed = [d for d in docs if d["type"] == EventType.BLOCK_COMPLETED.value]
            assert len(completed) == 1 and completed[0]["data"]["delivered"] == 5
            assert sum(d["type"] == "stop.arrived" for d in docs) == 3  # no stop re-entered after the restart
    asyncio.run(resume())


def test_crash_between_journal_and_append_replays_the_journaled_events(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    line = kill_child(db, "journal_only")
    assert line.startswith("journal ")
    journaled = line.split(" ", 1)[1].split(",")
    with EventStore(db) as store:
        assert not {d["id"] for d in store.events()} & set(journaled)  # the append never happened

    async def resume() -> None:
        with EventStore(db) as store:
            runner = await WorkflowRunner.open(store, Role.VEHICLE)
            ids = [d["id"] for d in store.events()]
            assert ids[-len(journaled):] == journaled  # appended at restart with the same ids
            assert runner.workflow.state.stops["S2"].done  # and the state that goes with them
            # Opening again finds them stored: nothing appended twice.
            again = await WorkflowRunner.open(store, Role.VEHICLE)
            assert [d["id"] for d in store.events()] == ids and again.workflow.phase is Phase.AT_STOP
            assert store.verify_chain().ok
    asyncio.run(resume())


@pytest.mark.parametrize("mode", ["withdrawn", "withdraw_journal_only"])
def test_a_withdrawal_survives_kill_9_and_the_van_claims_again(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "events.db"
    line = kill_child(db, mode)
    assert line == "committed" or line.startswith("journal ")

    async def resume() -> None:
        with EventStore(db) as store:
            runner = await WorkflowRunner.open(store, Role.VEHICLE)
            wf = runner.workflow
            assert wf.phase is Phase.IDLE and wf.state.block_id is None and wf.state.route is None
            assert wf.state.withdrawn["block"] == "B1" and wf.state.withdrawn["return_packages"] == ["P3", "P4", "P5"]
            assert store.state.get(CURRENT_BLOCK_KEY) is None
            docs = store.events()
            withdrawn = [d for d in docs if d["type"] == EventType.BLOCK_WITHDRAWN.value]
            assert len(withdrawn) == 1 and withdrawn[0]["block"] == "B1"
            assert withdrawn[0]["data"]["delivered"] == ["P1", "P2"]  # proven before: in the stream, and said so
            assert {p for d in docs if d["type"] == "delivery.proof" for p in d["data"]["packages"]} == {"P1", "P2"}
            # The same withdrawal again (a command re-run) is refused, never applied twice.
            again = await runner.apply(BlockWithdrawn("B1"))
            assert again.rejection is not None and again.rejection.reason is RejectReason.WRONG_STATE
            for item in (OffersReceived((block("B1"),)), ClaimRequested("B1"), ClaimResult("B1", True)):
                assert (await runner.apply(item)).accepted
            assert wf.phase is Phase.CLAIMED and store.state.get(CURRENT_BLOCK_KEY) == "B1"
            reopened = await WorkflowRunner.open(store, Role.VEHICLE)
            assert reopened.workflow.state == wf.state and store.verify_chain().ok
    asyncio.run(resume())


def test_a_failed_commit_rolls_the_state_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = EventStore(tmp_path / "events.db")
        runner = await WorkflowRunner.open(store, Role.VEHICLE)
        runner.workflow.state = drive_to(Phase.ON_ROUTE).state
        store.close()  # every write now fails with StoreClosed
        outcome = await runner.apply(ExceptionReported("S1", ExceptionReason.NO_ACCESS))
        assert outcome.rejection.reason is RejectReason.STORE_UNAVAILABLE
        assert outcome.feedback == (Feedback.ATTENTION,) and outcome.events == ()
        assert runner.workflow.phase is Phase.ON_ROUTE and not runner.workflow.state.stops["S1"].done
    asyncio.run(scenario())


def test_unreadable_or_other_role_state_starts_fresh(tmp_path: Path) -> None:
    async def scenario() -> None:
        with EventStore(tmp_path / "events.db") as store:
            store.state.set(STATE_KEY, {"workflow": {"role": "vehicle", "state": {"phase": "flying"}}})
            runner = await WorkflowRunner.open(store, Role.VEHICLE)
            assert runner.workflow.phase is Phase.IDLE
            await runner.apply(PackageScanned("P1"))  # wrong state: recorded, not fatal
            runner = await WorkflowRunner.open(store, Role.DOCK)
            assert runner.workflow.phase is DockPhase.IDLE
    asyncio.run(scenario())
