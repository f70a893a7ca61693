"""Positioning on simulated drives, faster than real time: the tracker takes time from the fixes only."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from device.agent import workflow_input
from device.contract.domain import EventType
from device.positioning import (
    Arrived,
    ClockSkewDetector,
    Departed,
    FixFilter,
    NextStop,
    PositionTracker,
    Rejected,
    StopPoint,
    ThinningConfig,
    TrackerConfig,
    thin,
)
from device.positioning.geo import LocalProjection, distance_m, offset
from device.positioning.thinning import point_segment_distance
from device.positioning.wire import position
from device.testbench.gps_route import DriveConfig, SimStop, Tunnel, drive, epoch_sentences
from device.workflow.inputs import ArrivedAt, DepartedFrom
from firmware_bridge.fix import Fix, FixMode
from firmware_bridge.gps.nmea_reader import NmeaFixReader

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def town_stops(n: int, spacing_m: float = 450.0) -> list[SimStop]:
    stops, lat, lon = [], 52.37, 4.89
    for i in range(n):
        lat, lon = offset(lat, lon, spacing_m * (0.6 + 0.1 * (i % 3)), spacing_m * (0.8 - 0.35 * (i % 4)))
        stops.append(SimStop(f"S{i + 1:02d}", lat, lon))
    return stops


def via_nmea(epochs, cfg):  # noqa: ANN001, ANN201
    """Render each epoch as NMEA and read it back, as the serial fallback would."""
    reader = NmeaFixReader()
    for epoch in epochs:
        yield from reader.feed(b"".join(epoch_sentences(epoch, cfg)))
    last = reader.flush()
    if last is not None:
        yield last


def test_ten_stops_with_jitter_and_a_tunnel_give_ten_arrivals_and_departures_in_order() -> None:
    stops = town_stops(10, spacing_m=800.0)
    probe = list(drive(stops, DriveConfig()))
    # Put the 60 s tunnel in the second half of the drive, on a stretch of road (no stop within the gap).
    start = next(i for i in range(len(probe) // 2, len(probe) - 100)
                 if all(e.parked_at is None for e in probe[i - 5:i + 65]))
    # Plus urban-canyon spikes: 400 m off for one second, while driving and while parked.
    spikes = (start - 200, start - 150, start + 120, len(probe) - 700)
    cfg = DriveConfig(parked_jitter_m=30.0, tunnel=Tunnel(start_s=start, duration_s=60.0), spikes_at_s=spikes)
    epochs = list(drive(stops, cfg))
    assert sum(1 for e in epochs if not e.fix.has_position) == 60
    # The parked jitter really reaches the fence region: up to 30 m from the stop.
    spiked = {cfg.start + timedelta(seconds=s) for s in spikes}
    parked = [e for e in epochs if e.parked_at and e.time not in spiked]
    worst = max(distance_m(e.fix.lat, e.fix.lon, e.true_lat, e.true_lon) for e in parked)
    assert 20.0 < worst <= 30.5

    tracker = PositionTracker([StopPoint(s.id, s.lat, s.lon, radius_m=40.0) for s in stops])
    events = [ev for fix in via_nmea(epochs, cfg) for ev in tracker.feed(fix)]
    visits = [(type(ev).__name__, ev.stop_id) for ev in events if isinstance(ev, (Arrived, Departed))]
    expected = [(kind, s.id) for s in stops for kind in ("Arrived", "Departed")]
    assert visits == expected
    assert tracker.filter.counts[Rejected.NO_FIX.value] == 60
    assert tracker.filter.counts[Rejected.JUMP.value] == len(spikes)
    # Event times come from the fixes (simulated 2026 morning), not from the wall clock.
    arrivals = [ev for ev in events if isinstance(ev, Arrived)]
    assert all(T0 <= ev.at <= epochs[-1].time for ev in arrivals)
    for ev in arrivals:
        parked_from = min(e.time for e in epochs if e.parked_at == ev.stop_id)
        assert parked_from - timedelta(seconds=15) <= ev.at <= parked_from + timedelta(seconds=5)


def test_next_stop_distance_bearing_and_eta() -> None:
    stop = StopPoint("A", *offset(52.37, 4.89, 1000.0, 0.0))
    tracker = PositionTracker([stop])
    fix = Fix(T0, 52.37, 4.89, FixMode.FIX_3D, speed=10.0, track=0.0, eph=5.0)
    (nxt,) = tracker.feed(fix)
    assert isinstance(nxt, NextStop) and nxt.stop_id == "A"
    assert nxt.distance_m == pytest.approx(1000.0, abs=1.0)
    assert nxt.bearing == pytest.approx(0.0, abs=0.1)
    assert nxt.eta_s == pytest.approx(100.0, abs=1.0)


def test_drive_past_without_dwell_is_not_an_arrival() -> None:
    stop = StopPoint("A", 52.37, 4.89, radius_m=40.0)
    tracker = PositionTracker([stop])
    events = []
    for i in range(-10, 11):  # 10 m/s straight through the fence: 8 s inside
        lat, lon = offset(52.37, 4.89, i * 10.0, 0.0)
        events += tracker.feed(Fix(T0 + timedelta(seconds=i + 10), lat, lon, FixMode.FIX_3D, speed=10.0))
    assert not [ev for ev in events if isinstance(ev, (Arrived, Departed))]


def test_filter_drops_bad_fixes_and_jumps() -> None:
    f = FixFilter()
    ok = Fix(T0, 52.37, 4.89, FixMode.FIX_3D, speed=10.0, eph=5.0)
    assert f.feed(ok).fix == ok
    assert f.feed(Fix(T0 + timedelta(seconds=1), None, None)).rejected is Rejected.NO_FIX
    assert f.feed(Fix(T0 + timedelta(seconds=2), 52.37, 4.89, FixMode.FIX_2D, eph=500.0)).rejected \
        is Rejected.ACCURACY
    assert f.feed(Fix(None, 52.37, 4.89, FixMode.FIX_3D)).rejected is Rejected.NO_TIME
    assert f.feed(ok).rejected is Rejected.NOT_NEWER
    far = offset(52.37, 4.89, 5000.0, 0.0)  # 5 km in 3 s
    assert f.feed(Fix(T0 + timedelta(seconds=3), *far, FixMode.FIX_3D, speed=10.0)).rejected is Rejected.JUMP
    # A receiver that keeps insisting is believed after max_jump_rejects (it was us who was wrong).
    verdicts = [f.feed(Fix(T0 + timedelta(seconds=4 + i), *far, FixMode.FIX_3D, speed=10.0)) for i in range(6)]
    assert verdicts[-1].fix is not None and verdicts[0].rejected is Rejected.JUMP


def test_filter_holds_position_while_parked() -> None:
    f = FixFilter()
    first = f.feed(Fix(T0, 52.37, 4.89, FixMode.FIX_3D, speed=0.1)).fix
    for i in range(1, 30):
        lat, lon = offset(52.37, 4.89, 25.0 * (-1) ** i, 10.0)
        held = f.feed(Fix(T0 + timedelta(seconds=i), lat, lon, FixMode.FIX_3D, speed=0.2))
        assert held.held and (held.fix.lat, held.fix.lon) == (first.lat, first.lon)
    lat, lon = offset(52.37, 4.89, 30.0, 0.0)
    moving = f.feed(Fix(T0 + timedelta(seconds=31), lat, lon, FixMode.FIX_3D, speed=8.0))
    assert not moving.held and moving.fix.lat == lat


def test_thinning_a_two_hour_drive() -> None:
    stops = town_stops(50, spacing_m=700.0)
    epochs = [e for e in drive(stops, DriveConfig(parked_s=60.0)) if e.fix.has_position][:7200]
    assert len(epochs) == 7200  # two hours at 1 Hz
    f = FixFilter()
    track = [r.fix for r in (f.feed(e.fix) for e in epochs) if r.fix is not None]
    result = thin(track, ThinningConfig(tolerance_m=10.0))
    assert result.reduction >= 10.0, result.reduction
    assert result.max_deviation_m < 15.0
    # Independent check of the deviation: every dropped point against the kept line around it.
    kept = result.kept
    proj = LocalProjection(track[0].lat, track[0].lon)
    xy = np.array([proj.to_xy(p.lat, p.lon) for p in track])
    worst = max(float(point_segment_distance(xy[a + 1:b], xy[a], xy[b]).max())
                for a, b in zip(kept, kept[1:]) if b - a > 1)
    assert worst < 15.0


def test_clock_skew_is_recorded_once_and_when_corrected() -> None:
    system = [T0 + timedelta(seconds=3600)]  # the Pi booted an hour ahead
    detector = ClockSkewDetector(now=lambda: system[0])
    fix = Fix(T0, 52.37, 4.89, FixMode.FIX_3D)
    event = detector.check(fix)
    assert event is not None and event.type is EventType.CLOCK_SKEW
    # the event carries the fix in the contract's wire form, as every event does
    assert event.data["skew_s"] == 3600.0 and event.fix == position(fix) and event.mono > 0
    assert event.fix is not None and event.fix.to_dict()["lat"] == 52.37
    assert detector.check(Fix(T0 + timedelta(seconds=1), 52.37, 4.89, FixMode.FIX_3D)) is None
    system[0] = T0 + timedelta(seconds=2.5)  # NTP or GPS set the clock
    corrected = detector.check(Fix(T0 + timedelta(seconds=2), 52.37, 4.89, FixMode.FIX_3D))
    assert corrected is not None and corrected.data["corrected"] is True
    assert detector.check(Fix(None, None, None)) is None


def test_route_revision_keeps_progress_and_events_become_workflow_inputs() -> None:
    a = StopPoint("A", 52.37, 4.89)
    b = StopPoint("B", *offset(52.37, 4.89, 1000.0, 0.0))
    c = StopPoint("C", *offset(52.37, 4.89, 2000.0, 0.0))
    tracker = PositionTracker([a, b], TrackerConfig(dwell_s=5.0, depart_confirm_s=2.0))
    events = []
    t = T0
    for north in [0.0] * 8 + [20.0 * k for k in range(1, 11)]:  # park at A, then drive off north
        t += timedelta(seconds=1)
        lat, lon = offset(52.37, 4.89, north, 0.0)
        events += tracker.feed(Fix(t, lat, lon, FixMode.FIX_3D, speed=0.0 if north == 0 else 10.0))
    assert [type(e).__name__ for e in events if not isinstance(e, NextStop)] == ["Arrived", "Departed"]
    tracker.revise([a, c, b])  # the cloud inserts C before B
    assert [s.id for s in tracker.pending] == ["C", "B"]
    t += timedelta(seconds=1)
    (nxt,) = tracker.feed(Fix(t, *offset(52.37, 4.89, 200.0, 0.0), FixMode.FIX_3D, speed=10.0))
    assert nxt.stop_id == "C"
    inputs = [workflow_input(e) for e in events if not isinstance(e, NextStop)]
    assert inputs == [ArrivedAt("A"), DepartedFrom("A")] and workflow_input(nxt) is None
