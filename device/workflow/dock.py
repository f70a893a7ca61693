"""The dock role: scan-to-stage. Each scan says which route and bag a package goes to; a package scanned into
the wrong route's bag is an alert; per-route counts; `dock.staging_complete` once per finished route.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Callable, ClassVar, Mapping

from device.contract.domain import EventType, utc_now
from device.workflow.changes import LIST, FieldSpec, Tracked, mapping, value
from device.workflow.core import Machine, Rejected, Step, Transition, check_id
from device.workflow.inputs import DOCK_INPUTS, StageScan, StagingEntry, StagingPlan, StagingPlanReceived
from device.workflow.outputs import Feedback, NoticeKind, RejectReason

MAX_PLAN_ENTRIES = 50000


class DockPhase(StrEnum):
    IDLE = "idle"  # no staging plan yet
    STAGING = "staging"
    COMPLETE = "complete"  # every route of the plan staged


@dataclass
class DockState(Tracked):
    phase: DockPhase = DockPhase.IDLE
    plan: StagingPlan | None = None
    staged: dict[str, str] = field(default_factory=dict)  # package -> route it was staged into
    completed_routes: list[str] = field(default_factory=list)

    FIELDS: ClassVar[Mapping[str, FieldSpec]] = {
        "phase": value(str, DockPhase), "plan": value(StagingPlan.to_dict, StagingPlan.from_dict),
        "staged": mapping(), "completed_routes": LIST,
    }

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.value, "plan": self.plan.to_dict() if self.plan else None,
                "staged": dict(self.staged), "completed_routes": list(self.completed_routes)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DockState:
        plan = raw.get("plan")
        return cls(DockPhase(raw["phase"]), StagingPlan.from_dict(plan) if plan else None,
                   dict(raw.get("staged", {})), list(raw.get("completed_routes", [])))


class DockWorkflow(Machine[DockState, DockPhase]):
    INPUTS = DOCK_INPUTS

    def __init__(self, state: DockState | None = None, clock: Callable[[], datetime] = utc_now) -> None:
        super().__init__(state or DockState(), clock)

    def phase_of(self, state: DockState) -> DockPhase:
        return state.phase

    def _routine(self, item: object) -> bool:
        return isinstance(item, StagingPlanReceived)

    def route_counts(self) -> dict[str, dict[str, Any]]:
        return _route_counts(self.state)

    def view(self) -> dict[str, Any]:
        s = self.state
        return {"role": "dock", "phase": s.phase.value, "plan_version": s.plan.version if s.plan else None,
                "routes": _route_counts(s), "completed_routes": list(s.completed_routes)}

    def _on_plan(self, step: Step, s: DockState, item: StagingPlanReceived) -> None:
        plan = item.plan
        if not isinstance(plan, StagingPlan) or not isinstance(plan.version, int) or plan.version < 1:
            raise Rejected(RejectReason.INVALID_INPUT, "plan: expected a StagingPlan with version >= 1")
        if len(plan.entries) > MAX_PLAN_ENTRIES:
            raise Rejected(RejectReason.INVALID_INPUT, f"plan: more than {MAX_PLAN_ENTRIES} entries")
        seen: set[str] = set()
        for entry in plan.entries:
            if not isinstance(entry, StagingEntry):
                raise Rejected(RejectReason.INVALID_INPUT, "plan: entries must be StagingEntry")
            check_id(entry.package_id, "package")
            check_id(entry.route_id, "route")
            check_id(entry.bag, "bag")
            if entry.package_id in seen:
                raise Rejected(RejectReason.INVALID_INPUT, f"plan: package {entry.package_id} appears twice")
            seen.add(entry.package_id)
        if s.plan is not None and plan.version <= s.plan.version:
            raise Rejected(RejectReason.STALE_PLAN, f"version {plan.version} <= {s.plan.version}", record=False)
        where = {e.package_id: e.route_id for e in plan.entries}
        # Packages already staged into a route the new plan no longer gives them must be moved.
        restage = sorted(p for p, route in s.staged.items() if where.get(p) != route)
        for package in restage:
            del s.staged[package]
        s.plan = plan
        s.completed_routes = [r for r in s.completed_routes if _route_counts(s).get(r, {}).get("complete")]
        step.event(EventType.STAGING_PLAN_RECEIVED, {"version": plan.version, "packages": len(plan.entries),
                                                     "routes": sorted(set(where.values())), "restage": restage})
        if restage:
            step.feedback.append(Feedback.ATTENTION)
        step.notice(NoticeKind.ROUTE, f"staging plan v{plan.version}: {len(plan.entries)} packages",
                    counts=_route_counts(s), restage=restage)
        s.phase = DockPhase.STAGING
        _complete_routes(step, s)

    def _on_stage_scan(self, step: Step, s: DockState, item: StageScan) -> None:
        code = check_id(item.code, "code")
        into = None if item.route_id is None else check_id(item.route_id, "route_id")
        entry = s.plan.entry(code) if s.plan is not None else None
        if entry is None:
            _scan_problem(step, code, "unknown", Feedback.WRONG_PACKAGE, {})
            return
        target = {"route": entry.route_id, "bag": entry.bag}
        if into is not None and into != entry.route_id:
            _scan_problem(step, code, "wrong_route", Feedback.WRONG_ROUTE, {**target, "scanned_into": into})
            return
        if code in s.staged:
            _scan_problem(step, code, "duplicate", Feedback.DUPLICATE_SCAN, target)
            return
        s.staged[code] = entry.route_id
        counts = _route_counts(s)[entry.route_id]
        step.event(EventType.PACKAGE_STAGED, {"package": code, **target, "staged": counts["staged"],
                                              "total": counts["total"]}, block=entry.route_id)
        step.feedback.append(Feedback.GOOD_SCAN)
        step.notice(NoticeKind.STAGE_RESULT, f"{entry.route_id} / bag {entry.bag}", package=code, **target,
                    counts=counts)
        _complete_routes(step, s)


def _scan_problem(step: Step, code: str, reason: str, feedback: Feedback, data: dict[str, Any]) -> None:
    step.event(EventType.PACKAGE_REJECTED, {"package": code, "reason": reason, **data}, block=data.get("route"))
    step.feedback.append(feedback)
    where = f": goes to {data['route']} / bag {data['bag']}" if "route" in data else ""
    step.notice(NoticeKind.STAGE_RESULT, f"{reason.replace('_', ' ').upper()}{where}", package=code, reason=reason,
                **data)


def _route_counts(s: DockState) -> dict[str, dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for entry in s.plan.entries if s.plan else ():
        row = counts.setdefault(entry.route_id, {"staged": 0, "total": 0})
        row["total"] += 1
        row["staged"] += s.staged.get(entry.package_id) == entry.route_id
    for row in counts.values():
        row["complete"] = row["staged"] == row["total"]
    return counts


def _complete_routes(step: Step, s: DockState) -> None:
    counts = _route_counts(s)
    for route, row in counts.items():
        if row["complete"] and route not in s.completed_routes:
            s.completed_routes.append(route)
            step.event(EventType.STAGING_COMPLETE, {"route": route, "packages": row["total"]}, block=route)
            step.feedback.append(Feedback.ROUTE_STAGED)
            step.notice(NoticeKind.ROUTE_STAGED, f"route {route} staged: {row['total']} packages", route=route)
    s.phase = DockPhase.COMPLETE if all(r["complete"] for r in counts.values()) else DockPhase.STAGING


D = DockPhase
DOCK_TABLE: dict[tuple[DockPhase, type], Transition[DockState]] = {
    (D.IDLE, StagingPlanReceived): Transition(DockWorkflow._on_plan, frozenset({D.STAGING, D.COMPLETE})),
    (D.STAGING, StagingPlanReceived): Transition(DockWorkflow._on_plan, frozenset({D.STAGING, D.COMPLETE})),
    (D.COMPLETE, StagingPlanReceived): Transition(DockWorkflow._on_plan, frozenset({D.STAGING, D.COMPLETE})),
    (D.STAGING, StageScan): Transition(DockWorkflow._on_stage_scan, frozenset({D.STAGING, D.COMPLETE})),
    # A finished dock still answers scans: a late package is a duplicate, unknown or wrong-route alert.
    (D.COMPLETE, StageScan): Transition(DockWorkflow._on_stage_scan, frozenset({D.COMPLETE})),
}
DockWorkflow.TABLE = DOCK_TABLE
