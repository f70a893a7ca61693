"""Re-sequencing on the van: the heuristic keeps time windows and is never worse than the order it was given;
the workflow re-orders its open stops after an exception, an out-of-order arrival or slow legs, records
`route.resequenced`, keeps finished stops, shows ETAs; and the cloud's next route version wins."""
from __future__ import annotations

import math
import random
from datetime import timedelta

import numpy as np
import pytest

from device.contract.domain import Block, EventType, Package, Route, Stop
from device.positioning.geo import offset
from device.routing.resequence import Visit, as_given, leg_seconds, resequence
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    ClaimResult,
    DepartedFrom,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    OffersReceived,
    PackageScanned,
    RouteReceived,
    VehicleWorkflow,
)
from tests.helpers.workflow import T0, FakeClock, ok

HOME = (47.61, -122.34)


def _schedule(order: list[int], secs: np.ndarray, todo: list[Visit]) -> list[float]:
    """Service start per visit, recomputed here (not by the heuristic)."""
    out, t, here = [], 0.0, 0
    for v in order:
        t = max(t + secs[here, v], todo[v - 1].opens_s)
        out.append(t)
        t += todo[v - 1].service_s
        here = v
    return out


def test_a_late_stop_is_moved_so_every_window_holds() -> None:
    todo = [Visit(f"E{k}", *offset(*HOME, 0, 1000.0 * k), service_s=60) for k in range(1, 6)]
    todo.append(Visit("W", *offset(*HOME, 0, -600), closes_s=600, service_s=60))  # due in 10 minutes, planned last
    secs = leg_seconds(HOME, todo, 1.35, 6.0)
    assert as_given(todo, secs).late_stops == 1
    result = resequence(todo, secs)
    assert result.late_stops == 0 and result.order[0] == "W" and sorted(result.order) == sorted(v.id for v in todo)
    index = {v.id: k + 1 for k, v in enumerate(todo)}
    starts = _schedule([index[i] for i in result.order], secs, todo)
    assert all(start <= todo[index[i] - 1].closes_s for i, start in zip(result.order, starts))


@pytest.mark.parametrize("seed", range(8))
def test_never_worse_than_the_given_order(seed: int) -> None:
    rng = random.Random(seed)
    todo = []
    for k in range(40):
        lat, lon = offset(*HOME, rng.uniform(-3000, 3000), rng.uniform(-3000, 3000))
        opens = rng.uniform(0, 10_000) if rng.random() < 0.3 else -math.inf
        todo.append(Visit(f"S{k}", lat, lon, opens, opens + 3600, 90))
    secs = leg_seconds(HOME, todo, 1.35, 6.0)
    given, result = as_given(todo, secs), resequence(todo, secs)
    assert sorted(result.order) == sorted(v.id for v in todo)
    assert (result.late_s, result.finish_s) <= (given.late_s + 1e-6, given.finish_s + 1e-6) or \
        result.late_s < given.late_s


# --- in the workflow ---------------------------------------------------------------------------------------

def _stop(stop_id: str, east_m: float, window_min: float | None = None) -> Stop:
    lat, lon = offset(*HOME, 0, east_m)
    return Stop(stop_id, f"{stop_id} Main St", stop_id[1:], lat, lon, (Package(f"P{stop_id}"),), service_s=60,
                window_end=None if window_min is None else T0 + timedelta(minutes=window_min))


# the plan's order zig-zags: S1 1 km east, S2 3 km, S3 2 km, S4 4 km, S5 0.5 km west due within 40 minutes
PLAN = Route("B1", 1, (_stop("S1", 1000), _stop("S2", 3000), _stop("S3", 2000), _stop("S4", 4000),
                       _stop("S5", -500, window_min=40)))


def _on_route(clock: FakeClock) -> VehicleWorkflow:
    wf = VehicleWorkflow(clock=clock)
    block = Block("B1", "DXX1", T0, T0 + timedelta(hours=8))
    for item in (OffersReceived((block,)), ClaimRequested("B1"), ClaimResult("B1", True), RouteReceived(PLAN),
                 *(PackageScanned(p) for p in PLAN.manifest()), LoadingDone()):
        ok(wf.handle(item))
    return wf


def _events(outcome, kind: EventType) -> list:
    return [e for e in outcome.events if e.type is kind]


def test_an_exception_resequences_keeping_windows_and_finished_stops() -> None:
    clock = FakeClock()
    wf = _on_route(clock)
    clock.advance(5)
    ok(wf.handle(ArrivedAt("S1")))
    clock.advance(2)
    outcome = ok(wf.handle(ExceptionReported("S1", ExceptionReason.NO_ACCESS)))
    [event] = _events(outcome, EventType.ROUTE_RESEQUENCED)
    assert event.data["reason"] == "exception" and event.data["old_order"] == ["S2", "S3", "S4", "S5"]
    assert event.data["new_order"][0] == "S5" and event.data["late_stops"] == 0
    assert event.data["late_stops_before"] == 1
    view = wf.view()
    assert [s["id"] for s in view["stops"]] == ["S1", *event.data["new_order"]]  # the finished stop stays in front
    assert view["stops"][0]["done"] and view["route_version"] == 1 and view["resequenced"] == 1
    assert set(view["etas"]) == {"S2", "S3", "S4", "S5"}
    assert view["etas"]["S5"] <= "2026-05-04T08:40:00.000Z"  # inside its window
    etas = [view["etas"][i] for i in event.data["new_order"]]
    assert etas == sorted(etas)
    assert view["forecast"] == {"late": [], "on_time_rate": 1.0}  # S5, the one stop with a window, on time
    assert any(n.kind.value == "route_resequenced" for n in outcome.notices)


def test_the_clouds_next_version_replaces_the_vans_order() -> None:
    clock = FakeClock()
    wf = _on_route(clock)
    ok(wf.handle(ArrivedAt("S1")))
    ok(wf.handle(ExceptionReported("S1", ExceptionReason.NO_ACCESS)))
    vans = [s["id"] for s in wf.view()["stops"]]
    stale = wf.handle(RouteReceived(PLAN))  # the retained v1 again (a reconnect): the van's order stays
    assert not stale.accepted and [s["id"] for s in wf.view()["stops"]] == vans
    cloud = Route("B1", 2, (PLAN.stops[0], PLAN.stops[3], PLAN.stops[2], PLAN.stops[1], PLAN.stops[4]))
    outcome = ok(wf.handle(RouteReceived(cloud)))
    assert _events(outcome, EventType.ROUTE_REVISED) and not _events(outcome, EventType.ROUTE_RESEQUENCED)
    view = wf.view()
    assert [s["id"] for s in view["stops"]] == ["S1", "S4", "S3", "S2", "S5"] and view["route_version"] == 2
    assert view["stops"][0]["done"] and view["resequenced"] == 0


def test_arriving_out_of_order_resequences_the_rest() -> None:
    clock = FakeClock()
    wf = _on_route(clock)
    clock.advance(12)
    outcome = ok(wf.handle(ArrivedAt("S3")))  # expected S1
    [event] = _events(outcome, EventType.ROUTE_RESEQUENCED)
    assert event.data["reason"] == "out_of_order" and "S3" not in event.data["new_order"]
    assert sorted(event.data["new_order"]) == ["S1", "S2", "S4", "S5"]


def test_slow_legs_resequence_once_until_the_speed_moves_again() -> None:
    clock = FakeClock()
    wf = _on_route(clock)
    ok(wf.handle(ArrivedAt("S1")))
    seen = []
    for _ in range(2):
        ok(wf.handle(ExceptionReported(wf.state.current_stop, ExceptionReason.REFUSED)))
        clock.advance(1)
        ok(wf.handle(DepartedFrom(wf.state.current_stop)))
        clock.advance(30)  # a 1-2 km leg in half an hour: far below the plan's speed
        outcome = ok(wf.handle(ArrivedAt(wf.next_stop().id)))
        seen.append((wf.state.slow_ratio, [e.data["reason"] for e in _events(outcome, EventType.ROUTE_RESEQUENCED)]))
    assert len(wf.state.speed_ratios) == 2 and max(wf.state.speed_ratios) < 0.75
    (first_ratio, first), (second_ratio, second) = seen
    assert first_ratio is not None and set(first) <= {"slow"}
    assert second_ratio == first_ratio and second == []  # the speed did not move: no second re-sequence
