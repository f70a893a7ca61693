"""The dock role: scan-to-stage with a staging plan, wrong-route alerts, per-route counts and completion."""
from __future__ import annotations

import pytest

from device.contract.domain import EventType
from device.workflow import (
    DockPhase,
    DockWorkflow,
    Feedback,
    NoticeKind,
    PackageScanned,
    RejectReason,
    StageScan,
    StagingEntry,
    StagingPlan,
    StagingPlanReceived,
    restore,
    snapshot,
)
from device.workflow.dock import DOCK_TABLE
from device.workflow.inputs import DOCK_INPUTS
from tests.helpers.workflow import FakeClock, ok, route


def plan(version: int = 1) -> StagingPlan:
    """R1 = the test route (5 packages, 3 stops, 2 stops per bag), R2 = two packages in one bag."""
    r2 = [StagingEntry("Q1", "R2", "R2-1"), StagingEntry("Q2", "R2", "R2-1")]
    r1 = StagingPlan.from_routes(version, (route(block_id="R1"),), stops_per_bag=2)
    return StagingPlan(version, r1.entries + tuple(r2))


def staging() -> DockWorkflow:
    wf = DockWorkflow(clock=FakeClock())
    ok(wf.handle(StagingPlanReceived(plan())))
    return wf


def types(outcome) -> list[EventType]:
    return [e.type for e in outcome.events]


def test_plan_from_routes_assigns_bags_by_stop_order() -> None:
    entries = {e.package_id: (e.route_id, e.bag) for e in plan().entries}
    assert entries["P1"] == ("R1", "R1-1") and entries["P3"] == ("R1", "R1-1") and entries["P5"] == ("R1", "R1-2")
    assert StagingPlan.from_dict(plan().to_dict()) == plan()


def test_scan_to_stage_says_route_and_bag_counts_and_completes_routes() -> None:
    wf = staging()
    assert wf.phase is DockPhase.STAGING
    assert wf.route_counts() == {"R1": {"staged": 0, "total": 5, "complete": False},
                                 "R2": {"staged": 0, "total": 2, "complete": False}}
    first = ok(wf.handle(StageScan("Q1")))
    assert types(first) == [EventType.PACKAGE_STAGED] and first.feedback == (Feedback.GOOD_SCAN,)
    assert first.events[0].data == {"package": "Q1", "route": "R2", "bag": "R2-1", "staged": 1, "total": 2}
    assert first.events[0].block == "R2"
    assert first.notices[0].kind is NoticeKind.STAGE_RESULT and first.notices[0].text == "R2 / bag R2-1"
    done = ok(wf.handle(StageScan("Q2", route_id="R2")))
    assert types(done) == [EventType.PACKAGE_STAGED, EventType.STAGING_COMPLETE]
    assert done.events[1].data == {"route": "R2", "packages": 2} and Feedback.ROUTE_STAGED in done.feedback
    for code in ("P1", "P2", "P3", "P4"):
        ok(wf.handle(StageScan(code)))
    assert wf.phase is DockPhase.STAGING
    last = ok(wf.handle(StageScan("P5")))
    assert types(last)[-1] is EventType.STAGING_COMPLETE and wf.phase is DockPhase.COMPLETE
    # A complete dock still answers scans.
    again = ok(wf.handle(StageScan("P5")))
    assert again.feedback == (Feedback.DUPLICATE_SCAN,) and wf.phase is DockPhase.COMPLETE


@pytest.mark.parametrize("scan,reason,feedback,data", [
    (StageScan("P1", route_id="R2"), "wrong_route", Feedback.WRONG_ROUTE,
     {"route": "R1", "bag": "R1-1", "scanned_into": "R2"}),
    (StageScan("NOPE"), "unknown", Feedback.WRONG_PACKAGE, {}),
])
def test_scan_problems(scan: StageScan, reason: str, feedback: Feedback, data: dict) -> None:
    wf = staging()
    outcome = ok(wf.handle(scan))
    assert types(outcome) == [EventType.PACKAGE_REJECTED]
    assert outcome.events[0].data == {"package": scan.code, "reason": reason, **data}
    assert outcome.feedback == (feedback,) and wf.state.staged == {}
    assert outcome.notices[0].text.startswith(reason.replace("_", " ").upper())


def test_duplicate_scan_repeats_where_it_goes() -> None:
    wf = staging()
    ok(wf.handle(StageScan("P4")))
    outcome = ok(wf.handle(StageScan("P4")))
    assert outcome.feedback == (Feedback.DUPLICATE_SCAN,) and "R1 / bag R1-2" in outcome.notices[0].text


def test_newer_plan_moves_packages_and_keeps_progress() -> None:
    wf = staging()
    for code in ("P1", "Q1"):
        ok(wf.handle(StageScan(code)))
    moved = StagingPlan(2, tuple(StagingEntry(e.package_id, "R2" if e.package_id == "P1" else e.route_id,
                                              "R2-1" if e.package_id == "P1" else e.bag) for e in plan().entries))
    outcome = ok(wf.handle(StagingPlanReceived(moved)))
    assert types(outcome) == [EventType.STAGING_PLAN_RECEIVED] and outcome.events[0].data["restage"] == ["P1"]
    assert Feedback.ATTENTION in outcome.feedback and wf.state.staged == {"Q1": "R2"}
    stale = wf.handle(StagingPlanReceived(plan(1)))
    assert stale.rejection.reason is RejectReason.STALE_PLAN and stale.events == ()


@pytest.mark.parametrize("bad", [
    StagingPlanReceived("plan"),
    StagingPlanReceived(StagingPlan(0, ())),
    StagingPlanReceived(StagingPlan(1, (StagingEntry("P1", "R1", "b"), StagingEntry("P1", "R2", "b")))),
    StagingPlanReceived(StagingPlan(1, (StagingEntry("P\n1", "R1", "b"),))),
    StagingPlanReceived(StagingPlan(1, ("P1",))),
    StageScan(""),
    StageScan("P1", route_id=""),
    PackageScanned("P1"),  # a vehicle input
])
def test_bad_dock_inputs_are_rejected(bad: object) -> None:
    wf = staging()
    before = snapshot(wf)
    outcome = wf.handle(bad)
    assert outcome.rejection.reason is RejectReason.INVALID_INPUT, outcome
    assert snapshot(wf) == before


@pytest.mark.parametrize("phase,input_type", [(p, t) for p in DockPhase for t in DOCK_INPUTS
                                              if (p, t) not in DOCK_TABLE])
def test_dock_inputs_outside_the_table(phase: DockPhase, input_type: type) -> None:
    wf = {DockPhase.IDLE: DockWorkflow(clock=FakeClock()), DockPhase.STAGING: staging()}.get(phase)
    assert wf is not None and wf.phase is phase
    sample = {StageScan: StageScan("P1"), StagingPlanReceived: StagingPlanReceived(plan(9))}[input_type]
    before = snapshot(wf)
    outcome = wf.handle(sample)
    assert outcome.rejection.reason is RejectReason.WRONG_STATE and types(outcome) == [EventType.INPUT_REJECTED]
    assert snapshot(wf) == before


def test_empty_plan_is_complete_at_once_and_snapshot_round_trips() -> None:
    wf = DockWorkflow(clock=FakeClock())
    ok(wf.handle(StagingPlanReceived(StagingPlan(1))))
    assert wf.phase is DockPhase.COMPLETE
    wf = staging()
    ok(wf.handle(StageScan("Q1")))
    copy = restore(snapshot(wf))
    assert isinstance(copy, DockWorkflow) and copy.state == wf.state and copy.route_counts() == wf.route_counts()


def test_dock_view() -> None:
    wf = staging()
    ok(wf.handle(StageScan("Q1")))
    ok(wf.handle(StageScan("Q2")))
    assert wf.view() == {"role": "dock", "phase": "staging", "plan_version": 1, "completed_routes": ["R2"],
                         "routes": {"R1": {"staged": 0, "total": 5, "complete": False},
                                    "R2": {"staged": 2, "total": 2, "complete": True}}}
