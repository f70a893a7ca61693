from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from device.contract.chain import GENESIS_HASH, chain_hash
from device.contract.domain import Event, EventType, Lane, Route
from device.store import EventStore, RetentionPolicy, StoreError
from device.store.migrations import latest_version
from device.store.outbox import INSERT_BLOCK
from tests.helpers.store import current_route, mark_acked_upto
from tests.test_domain import route_doc


@pytest.fixture
def store(tmp_path: Path):
    with EventStore(tmp_path / "events.db") as s:
        yield s


def scan(i: int) -> Event:
    return Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:06d}"})


def test_pragmas_and_schema_version(store: EventStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    conn.close()
    checks = store._call(lambda db: (db.execute("PRAGMA synchronous").fetchone()[0],
                                     db.execute("PRAGMA foreign_keys").fetchone()[0]))
    assert checks == (2, 1)  # FULL, on


def test_append_assigns_gapless_seq_and_chained_hashes(store: EventStore) -> None:
    first = store.append(scan(0))
    rest = store.append_many([scan(i) for i in range(1, 5)])
    assert [e.seq for e in [first, *rest]] == [1, 2, 3, 4, 5]
    prev = GENESIS_HASH
    for stored in [first, *rest]:
        doc = json.loads(stored.body)
        assert doc["seq"] == stored.seq
        prev = chain_hash(prev, doc)
        assert prev == stored.hash
    assert store.verify_chain().ok


def test_pending_by_lane_with_caps_and_ack(store: EventStore) -> None:
    events = []
    for i in range(10):
        events.append(scan(i))
        events.append(Event(EventType.GPS_FIX, {"n": i}))
    store.append_many(events)
    assert store.stats().depth_by_lane == {"events": 10, "track": 10}
    batch = store.pending(limit=4, lane=Lane.EVENTS)
    assert [e.seq for e in batch] == [1, 3, 5, 7]
    assert all(e.lane is Lane.EVENTS for e in batch)
    one_body = len(batch[0].body)
    assert len(store.pending(limit=100, max_bytes=int(one_body * 2.5))) == 2
    assert len(store.pending(limit=100, max_bytes=1)) == 1  # never starves on one large event
    assert store.mark_acked([e.seq for e in batch]) == 4
    assert store.mark_acked([1, 3]) == 0  # acking twice is harmless
    assert mark_acked_upto(store, 10, lane=Lane.TRACK) == 5  # seqs 2, 4, 6, 8, 10
    stats = store.stats()
    assert stats.depth == 11 and stats.last_acked_seq == 10 and stats.last_seq == 20
    assert [e.seq for e in store.pending(limit=3)] == [9, 11, 12]


def test_a_group_of_several_insert_blocks_is_stored_whole_and_in_order(store: EventStore) -> None:
    events = [scan(i) for i in range(2 * INSERT_BLOCK + 3)]  # two whole blocks and a remainder
    stored = store.append_many(events)
    assert [e.seq for e in stored] == list(range(1, len(events) + 1))
    assert [doc["id"] for doc in store.events(limit=len(events))] == [e.id for e in events]
    assert store.verify_chain().ok
    with pytest.raises(StoreError):  # a duplicate in the last block fails the whole group, nothing is stored
        store.append_many([scan(1000 + i) for i in range(INSERT_BLOCK)] + [events[0]])
    assert store.stats().last_seq == len(events)
    assert store.verify_chain().ok


def test_an_empty_group_stores_nothing_and_the_next_event_follows_the_chain(store: EventStore) -> None:
    first = store.append(scan(1))
    assert store.append_many([]) == []
    assert store.append(scan(2)).seq == first.seq + 1
    assert store.stats().last_seq == 2 and store.verify_chain().ok


def test_duplicate_event_id_is_rejected_without_hurting_its_group(store: EventStore) -> None:
    event = scan(1)
    store.append(event)
    with pytest.raises(StoreError):
        store.append(event)
    assert store.append(scan(2)).seq == 2
    assert store.verify_chain().ok


def test_unserializable_event_fails_alone(store: EventStore) -> None:
    with pytest.raises(StoreError, match="TypeError"):
        store.append(Event(EventType.PACKAGE_SCANNED, {"bad": object()}))
    assert store.append(scan(1)).seq == 1  # the writer lives on, no seq was burnt
    assert store.verify_chain().ok


def test_group_commit_under_concurrent_producers(store: EventStore) -> None:
    def produce(base: int) -> None:
        for i in range(200):
            store.append(scan(base + i))

    threads = [threading.Thread(target=produce, args=(k * 1000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.stats().last_seq == 1600
    assert store.group_commits < 1600  # appends that waited together shared a transaction
    assert store.verify_chain().ok


def test_tampering_is_detected(store: EventStore, tmp_path: Path) -> None:
    store.append_many([scan(i) for i in range(5)])
    conn = sqlite3.connect(tmp_path / "events.db")
    body = json.loads(conn.execute("SELECT body FROM events WHERE seq = 3").fetchone()[0])
    body["data"]["package"] = "FORGED"
    conn.execute("UPDATE events SET body = ? WHERE seq = 3", [json.dumps(body)])
    conn.commit()
    report = store.verify_chain()
    assert not report.ok and report.first_bad_seq == 3 and report.reason == "hash mismatch"
    conn.execute("DELETE FROM events WHERE seq = 4")
    conn.commit()
    conn.close()
    assert store.verify_chain().first_bad_seq == 3


def test_deleted_event_is_a_gap(store: EventStore, tmp_path: Path) -> None:
    store.append_many([scan(i) for i in range(5)])
    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute("DELETE FROM events WHERE seq = 2")
    report = store.verify_chain()
    assert not report.ok and report.first_bad_seq == 2 and "gap" in report.reason


def test_retention_prunes_only_old_acked_prefix(tmp_path: Path) -> None:
    now = [1000.0]
    with EventStore(tmp_path / "e.db", RetentionPolicy(acked_max_age_s=100), clock=lambda: now[0]) as store:
        store.append_many([scan(i) for i in range(5)])  # stored at t=1000
        now[0] = 1050.0
        store.append_many([scan(i) for i in range(5, 10)])  # stored at t=1050
        store.mark_acked([1, 2, 4, 5, 6, 7, 8])  # seq 3 is still pending
        now[0] = 1120.0  # the first five are older than 100 s
        assert store.prune().deleted == 2  # seqs 1, 2: seq 3 is unacked and ends the prefix
        store.mark_acked([3])
        assert store.prune().deleted == 3  # 3, 4, 5: 6.. are younger than 100 s
        now[0] = 1200.0
        assert store.prune().upto_seq == 8  # 9 and 10 are unacked
        assert store.stats().depth == 2
        assert store.verify_chain().ok  # verifies from the anchor
        assert [e["seq"] for e in store.events()] == [9, 10]
    with EventStore(tmp_path / "e.db") as store:
        assert store.append(scan(99)).seq == 11  # seq continues after pruning and restart
        assert store.verify_chain().ok


def test_low_disk_thins_gps_but_never_scans(tmp_path: Path) -> None:
    always_low = RetentionPolicy(min_free_bytes=1 << 62, low_disk_track_interval_s=10.0, disk_check_interval_s=0)
    with EventStore(tmp_path / "e.db", always_low) as store:
        store.append(scan(0))
        store.mark_acked([1])
        fixes = [Event(EventType.GPS_FIX, {"n": i}, mono=100.0 + i) for i in range(30)]  # 1 Hz for 30 s
        scans = [scan(i) for i in range(1, 31)]
        results = store.append_many([e for pair in zip(fixes, scans) for e in pair])
        kept_fixes = [r for r, e in zip(results, [e for p in zip(fixes, scans) for e in p])
                      if e.type is EventType.GPS_FIX and r is not None]
        assert len(kept_fixes) == 3  # t=100, 110, 120
        assert all(r is not None for r, e in zip(results, [e for p in zip(fixes, scans) for e in p])
                   if e.type is EventType.PACKAGE_SCANNED)
        assert store.thinned_track_points == 27
        assert [e["seq"] for e in store.events()][0] == 2  # the acked scan was pruned at once
        assert store.verify_chain().ok


def test_state_route_versions_and_photos(store: EventStore) -> None:
    route = Route.from_dict(route_doc(version=2))
    assert store.state.save_route(route)
    assert not store.state.save_route(Route.from_dict(route_doc(version=1)))  # older: ignored
    assert not store.state.save_route(route)  # same version: ignored
    assert current_route(store, "B1") == route
    assert store.state.save_route(Route.from_dict(route_doc(version=3)))
    assert current_route(store, "B1").version == 3
    store.state.set("current_block", "B1")
    assert store.state.get("current_block") == "B1"
    store.state.record_photo("P1", "/data/photos/P1.jpg", "ab" * 32, stop_id="S1")
    assert store.state.photo("P1")["sha256"] == "ab" * 32
    assert store.state.photo("nope") is None


def test_corrupt_database_is_moved_aside_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore(path) as store:
        store.append_many([scan(i) for i in range(20)])
    with open(path, "r+b") as fh:  # garbage over the header and the first pages
        fh.write(b"\xde\xad\xbe\xef" * 2048)
    with EventStore(path) as store:
        events = store.events()
        assert [e["type"] for e in events] == ["store.recovered"]
        moved = Path(events[0]["data"]["moved_to"])
        assert store.verify_chain().ok
    assert moved.exists() and moved.read_bytes().startswith(b"\xde\xad\xbe\xef")
    assert moved.name.startswith("events.db.corrupt-")


def test_damaged_pages_fail_quick_check_and_are_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with EventStore(path) as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED, {"pad": "x" * 500, "n": i}) for i in range(200)])
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # keep the header valid, smash pages in the middle
        fh.seek(size // 2)
        fh.write(b"\x00\xff" * 4096)
    with EventStore(path) as store:
        assert store.recovery is not None
        assert store.events()[0]["type"] == "store.recovered"
    assert len(list(tmp_path.glob("events.db.corrupt-*"))) == 1


def test_acks_out_of_order_keep_the_highest_acked_seq(store: EventStore) -> None:
    """The sync acks lanes out of seq order: the mark only ever rises, and pending(after_seq=...) and
    newest_pending serve a sender that keeps several batches in flight."""
    store.append_many([scan(i) for i in range(6)])
    assert [e.seq for e in store.pending(after_seq=2)] == [3, 4, 5, 6]
    assert store.newest_pending(Lane.EVENTS).seq == 6
    store.mark_acked([5, 1])
    store.mark_acked([2])
    store.mark_acked([99])  # not an event: changes nothing
    assert store.stats().last_acked_seq == 5
    store.mark_acked([6])
    assert store.stats().last_acked_seq == 6 and store.newest_pending(Lane.EVENTS).seq == 4
    assert store.newest_pending(Lane.TRACK) is None



def test_the_newest_pending_breadcrumb_skips_newer_health_events(store: EventStore) -> None:
    """The status shows where the van is while telemetry gathers: the newest unacked GPS fix, past the health
    events behind it; none once it is acked."""
    store.append_many([Event(EventType.GPS_FIX, {"n": 1}), Event(EventType.GPS_FIX, {"n": 2}),
                       Event(EventType.HEALTH, {}), scan(3)])
    assert store.newest_pending(Lane.TRACK).type is EventType.HEALTH
    fix = store.newest_pending(Lane.TRACK, EventType.GPS_FIX)
    assert fix is not None and fix.seq == 2
    store.mark_acked([2])
    assert store.newest_pending(Lane.TRACK, EventType.GPS_FIX).seq == 1
    store.mark_acked([1])
    assert store.newest_pending(Lane.TRACK, EventType.GPS_FIX) is None


def test_additions_leave_the_store_readable_by_the_release_before_them(tmp_path: Path) -> None:
    """The release before the first addition (0.1.0, schema 3) refuses a store whose user_version is newer than 3;
    additions never move it, never change the tables the migrations made, and run once."""
    import sqlite_utils

    from device.store import migrations

    with EventStore(tmp_path / "events.db"):
        pass
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version() == 3
    schema = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())
    assert conn.execute("SELECT value FROM meta WHERE key = ?", [migrations.ADDITIONS_KEY]).fetchone() == (
        str(len(migrations.ADDITIONS)),)
    conn.close()
    plain = sqlite_utils.Database(tmp_path / "previous.db")  # what the migrations alone make
    for step in migrations.MIGRATIONS:
        step(plain)
    before = dict(plain.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())
    assert {name: schema[name] for name in before} == before
    assert set(schema) - set(before) == {"received_commands"}
    with EventStore(tmp_path / "events.db") as again:  # opened again: nothing runs twice
        assert again.state.received_commands() == []
