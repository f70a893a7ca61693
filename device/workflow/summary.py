"""The block summary: what the driver sees at the end and the cloud stores with `block.completed`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from device.workflow.state import PackageState, StopOutcome, VehicleState


@dataclass(frozen=True)
class BlockSummary:
    block_id: str
    route_version: int
    stops: int  # stops finished (delivered, partial or excepted)
    stops_delivered: int
    stops_partial: int
    stops_excepted: int
    stops_removed: int  # dropped by a revision before they were reached
    packages: int  # packages this block had to deliver (not counting those a revision removed)
    delivered: int
    exceptions: int  # packages not delivered for a reason (incl. not_loaded)
    exceptions_by_reason: dict[str, int]
    missing: int  # added by a revision to a stop already finished: never loaded, never excepted
    packages_removed: int
    timed_stops: int  # finished stops with a delivery window and at least one delivery
    on_time_stops: int
    on_time_rate: float | None  # on_time_stops / timed_stops; None when no stop had a window
    photo_checks: dict[str, int]  # verdict -> count
    started_at: str | None
    completed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        rate = "-" if self.on_time_rate is None else f"{self.on_time_rate:.0%}"
        return (f"block {self.block_id} complete: {self.stops} stops, {self.delivered}/{self.packages} packages "
                f"delivered, {self.exceptions} exceptions, on time {rate}, photo checks "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.photo_checks.items())))


def summarize(state: VehicleState) -> BlockSummary:
    finished = [s for s in state.stops.values() if s.done]
    timed = [s for s in finished if s.on_time is not None]
    counted = [p for p in state.packages.values() if p is not PackageState.REMOVED]
    return BlockSummary(
        block_id=state.block_id or "",
        route_version=state.route.version if state.route else 0,
        stops=len(finished),
        stops_delivered=sum(s.outcome is StopOutcome.DELIVERED for s in finished),
        stops_partial=sum(s.outcome is StopOutcome.PARTIAL for s in finished),
        stops_excepted=sum(s.outcome is StopOutcome.EXCEPTION for s in finished),
        stops_removed=sum(s.removed for s in state.stops.values()),
        packages=len(counted),
        delivered=sum(p is PackageState.DELIVERED for p in counted),
        exceptions=sum(p is PackageState.EXCEPTION for p in counted),
        exceptions_by_reason=dict(sorted(state.exceptions.items())),
        missing=sum(p is PackageState.MISSING for p in counted),
        packages_removed=len(state.packages) - len(counted),
        timed_stops=len(timed),
        on_time_stops=sum(bool(s.on_time) for s in timed),
        on_time_rate=(sum(bool(s.on_time) for s in timed) / len(timed)) if timed else None,
        photo_checks=dict(sorted(state.verdicts.items())),
        started_at=state.started_at,
        completed_at=state.completed_at,
    )
