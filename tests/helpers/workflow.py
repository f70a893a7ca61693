"""Builders for workflow tests: a fixed route, a settable clock, and driving a workflow to any phase."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from device.contract.domain import Block, Instruction, Package, Route, Stop, Verdict
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    ClaimResult,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    OffersReceived,
    Outcome,
    PackageScanned,
    Phase,
    PhotoChecked,
    RouteReceived,
    VehicleWorkflow,
)

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=timezone.utc)
SHA = "ab" * 32
STROKES = (((10.0, 10.0), (20.0, 15.0), (30.0, 12.0)), ((12.0, 30.0), (28.0, 30.0)))


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def block(block_id: str = "B1") -> Block:
    return Block(block_id, "DXX1", T0, T0 + timedelta(hours=8), pay_cents=12000, area="north")


def stop(stop_id: str, number: str, packages: tuple[Package, ...], window_min: float | None = 60) -> Stop:
    return Stop(stop_id, f"{number} Main St", number, 47.61, -122.34, packages,
                window_end=None if window_min is None else T0 + timedelta(minutes=window_min))


def route(version: int = 1, block_id: str = "B1") -> Route:
    """S1: P1 (door) + P2 (signature); S2: P3 (access code); S3: P4 (neighbour) + P5."""
    return Route(block_id, version, (
        stop("S1", "12", (Package("P1"), Package("P2", Instruction.HAND_TO_RESIDENT, signature_required=True))),
        stop("S2", "14", (Package("P3", Instruction.ACCESS_CODE, access_code="4321"),), window_min=90),
        stop("S3", "7", (Package("P4", Instruction.NEIGHBOUR, note="blue door"), Package("P5")), window_min=None),
    ))


def photo(stop_id: str, verdict: Verdict = Verdict.MATCH, packages: tuple[str, ...] = (), read: str | None = None,
          photo_id: str = "ph-1") -> PhotoChecked:
    return PhotoChecked(stop_id, packages, verdict, read, 0.93, photo_id, SHA)


def ok(outcome: Outcome) -> Outcome:
    assert outcome.accepted, outcome.rejection
    return outcome


def drive_to(phase: Phase, clock: FakeClock | None = None) -> VehicleWorkflow:
    """A workflow in `phase`, reached through real inputs only."""
    wf = VehicleWorkflow(clock=clock or FakeClock())
    if phase is Phase.IDLE:
        return wf
    ok(wf.handle(OffersReceived((block("B1"), block("B2")))))
    steps = [
        (Phase.CLAIMING, ClaimRequested("B1")),
        (Phase.CLAIMED, ClaimResult("B1", True)),
        (Phase.LOADING, RouteReceived(route())),
    ]
    for reached, item in steps:
        if wf.phase is phase:
            return wf
        ok(wf.handle(item))
        assert wf.phase is reached
    if wf.phase is phase:
        return wf
    for code in ("P1", "P2", "P3", "P4", "P5"):
        ok(wf.handle(PackageScanned(code)))
    ok(wf.handle(LoadingDone()))
    if phase is Phase.ON_ROUTE:
        return wf
    if phase is Phase.AT_STOP:
        ok(wf.handle(ArrivedAt("S1")))
        return wf
    assert phase is Phase.BLOCK_COMPLETE
    ok(wf.handle(ExceptionReported("S1", ExceptionReason.NO_ACCESS)))
    ok(wf.handle(ExceptionReported("S2", ExceptionReason.UNSAFE)))
    ok(wf.handle(ArrivedAt("S3")))
    ok(wf.handle(photo("S3")))
    assert wf.phase is Phase.BLOCK_COMPLETE
    return wf
