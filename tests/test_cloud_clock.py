"""The cloud's clock flags: wall-clock steps (Δts against Δmono between consecutive seqs) and timestamps ahead of
the cloud, as a pure check and as recorded by the cloud's ingest."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from cloud_sync.cloud import ClockFlag, ClockFlagKind, ClockStamp, check_clock
from cloud_sync.messages import EventBatch
from device.contract.domain import Event, EventType, Lane, iso_utc
from device.store import EventStore
from tests.helpers.cloud_target import CloudTarget

BASE = datetime(2025, 3, 1, 8, tzinfo=timezone.utc)  # well before now: +1 day stays in the past
T0 = BASE.timestamp()


def _stamp(seq: int, ts: float, mono: float, type_: str = "gps.fix") -> ClockStamp:
    return ClockStamp(seq, ts, mono, type_)


# --- the pure check ----------------------------------------------------------------------------------


def test_steady_clocks_and_small_drift_are_not_flagged() -> None:
    assert check_clock(None, _stamp(1, T0, 50.0), T0 + 1) == []
    assert check_clock(_stamp(1, T0, 50.0), _stamp(2, T0 + 10, 60.0), T0 + 11) == []
    assert check_clock(_stamp(1, T0, 50.0), _stamp(2, T0 + 11.5, 60.0), T0 + 12) == []  # 1.5 s: NTP slewing


def test_steps_back_and_forward_are_flagged_with_their_size() -> None:
    back = check_clock(_stamp(7, T0, 50.0), _stamp(8, T0 + 1 - 3600, 51.0), T0 + 2)
    assert back == [ClockFlag(8, ClockFlagKind.JUMP, -3600.0)]
    forward = check_clock(_stamp(8, T0, 50.0), _stamp(9, T0 + 0.5 + 86400, 50.5), T0 + 1)
    assert [(f.seq, f.kind) for f in forward] == [(9, ClockFlagKind.JUMP), (9, ClockFlagKind.FUTURE)]
    assert forward[0].jump_s == pytest.approx(86400.0)
    assert forward[1].jump_s == pytest.approx(86399.5)
    assert "+86400.0 s" in forward[0].detail() and "ahead" in forward[1].detail()


def test_no_comparison_across_a_reboot_or_a_hole() -> None:
    # mono went back: the device rebooted, its monotonic clock restarted; the two clocks cannot be compared
    assert check_clock(_stamp(1, T0, 5000.0), _stamp(2, T0 + 7200, 40.0), T0 + 7201) == []
    # the agent's first event after a reboot whose uptime passed the old one: downtime, not a step
    assert check_clock(_stamp(1, T0, 50.0), _stamp(2, T0 + 7200, 80.0, "agent.started"), T0 + 7201) == []
    # ... but a step back at an agent start is still a step
    assert len(check_clock(_stamp(1, T0, 50.0), _stamp(2, T0 - 600, 80.0, "agent.started"), T0 + 1)) == 1
    # not consecutive: nothing to compare with
    assert check_clock(_stamp(1, T0, 50.0), _stamp(3, T0 - 600, 60.0), T0 + 1) == []


def test_a_run_of_future_timestamps_is_flagged_once_at_its_start() -> None:
    day = 86400.0
    first = check_clock(None, _stamp(1, T0 + day, 50.0), T0)
    assert [(f.seq, f.kind) for f in first] == [(1, ClockFlagKind.FUTURE)]
    assert check_clock(_stamp(1, T0 + day, 50.0), _stamp(2, T0 + day + 1, 51.0), T0 + 1) == []
    assert check_clock(None, _stamp(1, T0 + 200, 50.0), T0) == []  # within the tolerance


@pytest.mark.parametrize("doc", [
    {"ts": "2026-11-24T08:00:00.000", "mono": 1.0},  # no zone: ambiguous
    {"ts": "yesterday", "mono": 1.0},
    {"ts": 1764000000, "mono": 1.0},
    {"ts": "2026-11-24T08:00:00.000Z", "mono": True},
    {"ts": "2026-11-24T08:00:00.000Z"},
    {},
])
def test_unreadable_clocks_give_no_stamp(doc: dict) -> None:
    assert ClockStamp.of(1, doc) is None


def test_stamp_of_an_event_document() -> None:
    stamp = ClockStamp.of(4, {"ts": "2025-03-01T08:00:01.250Z", "mono": 12.5, "type": "gps.fix"})
    assert stamp == ClockStamp(4, T0 + 1.25, 12.5, "gps.fix")


# --- recorded by the cloud's ingest -------------------------------------------------------------------


def _events_with_steps(tmp_path: Path, n: int, steps: dict[int, float]) -> list:
    """n events one second apart on both clocks; from index i on, the wall clock is off by steps[i] seconds.
    Stamped ahead of now by nothing: the base is in the past of the test's clock."""
    offset = 0.0
    events = []
    for i in range(n):
        offset = steps.get(i, offset)
        events.append(Event(EventType.PACKAGE_SCANNED if i % 3 == 0 else EventType.GPS_FIX, {"n": i},
                            ts=iso_utc(BASE + timedelta(seconds=i + offset)), mono=1000.0 + i))
    with EventStore(tmp_path / "device.db") as store:
        store.append_many(events)
        return store.pending(limit=n, max_bytes=1 << 30)


def _batch(events: list, batch_id: str) -> EventBatch:
    return EventBatch(batch_id, "van-a", 0, 1, tuple(orjson.loads(e.body) | {"hash": e.hash} for e in events))


def test_ingest_records_clock_steps_apart_from_the_integrity_flags(tmp_path: Path, cloud_target: CloudTarget) -> None:
    stored = _events_with_steps(tmp_path, 30, {10: -3600.0, 20: 86400.0})  # seq = index + 1
    db = cloud_target.open()
    try:
        # Lanes out of order, and the stream split over batches: the flags wait for the contiguous walk.
        priority = [e for e in stored if e.lane is Lane.EVENTS]
        track = [e for e in stored if e.lane is Lane.TRACK]
        first = db.ingest("van-a", _batch(priority, "b1"))
        assert first.clock_flagged == 0 and db.clock_flags("van-a") == []
        middle = db.ingest("van-a", _batch(track[:8], "b2"))
        rest = db.ingest("van-a", _batch(track[8:], "b3"))
        assert rest.verified_seq == 30
        flags = db.clock_flags("van-a")
        assert [(f["seq"], f["kind"]) for f in flags] == [(11, "clock_jump"), (21, "clock_jump")]
        assert [f["jump_s"] for f in flags] == [pytest.approx(-3600.0), pytest.approx(90000.0)]
        assert first.clock_flagged + middle.clock_flagged + rest.clock_flagged == 2
        assert db.flags("van-a") == []  # the stream itself is whole: no integrity flag
        assert {chain for _, _, chain in db.event_rows("van-a")} == {"ok"}
        again = db.ingest("van-a", _batch(track, "b4"))  # resends flag nothing twice
        assert again.clock_flagged == 0 and len(db.clock_flags("van-a")) == 2
    finally:
        db.close()


def test_ingest_compares_across_batches_with_the_verified_head(tmp_path: Path, cloud_target: CloudTarget) -> None:
    stored = _events_with_steps(tmp_path, 6, {3: -120.0})
    db = cloud_target.open()
    try:
        assert db.ingest("van-a", _batch(stored[:3], "b1")).clock_flagged == 0
        assert db.ingest("van-a", _batch(stored[3:], "b2")).clock_flagged == 1  # seq 4 against seq 3
        assert [(f["seq"], f["jump_s"]) for f in db.clock_flags()] == [(4, pytest.approx(-120.0))]
    finally:
        db.close()


def test_ingest_flags_timestamps_ahead_of_the_cloud(tmp_path: Path, cloud_target: CloudTarget) -> None:
    ahead = datetime.now(timezone.utc) + timedelta(days=1)
    events = [Event(EventType.GPS_FIX, {"n": i}, ts=iso_utc(ahead + timedelta(seconds=i)), mono=500.0 + i)
              for i in range(4)]
    with EventStore(tmp_path / "device.db") as store:
        store.append_many(events)
        stored = store.pending(limit=4, max_bytes=1 << 30)
    db = cloud_target.open()
    try:
        assert db.ingest("van-a", _batch(stored, "b1")).clock_flagged == 1
        (flag,) = db.clock_flags("van-a")
        assert (flag["seq"], flag["kind"]) == (1, "ts_future") and flag["jump_s"] == pytest.approx(86400, abs=60)
    finally:
        db.close()
