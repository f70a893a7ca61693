"""Group commit in the cloud's database: several batches (or claims) in one transaction, each stored exactly
as alone, on SQLite and PostgreSQL. A batch that fails inside a group costs only itself."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from cloud_sync.cloud import CloudDb, CloudDbError
from cloud_sync.cloud.db import Claim, IngestResult
from cloud_sync.messages import ClaimStatus, EventBatch
from device.contract.domain import Block, Event, EventType, Package, Route, Stop
from device.store import EventStore
from tests.helpers.cloud_target import CloudTarget


def _docs(tmp_path: Path, device: str, n: int) -> list[dict[str, object]]:
    """`n` events of a device's own store (ids and hash chain as the device makes them), each with its hash."""
    with EventStore(tmp_path / f"{device}.db") as store:
        store.append_many([Event(EventType.PACKAGE_SCANNED if i % 4 == 0 else EventType.GPS_FIX, {"n": i})
                           for i in range(n)])
        return [orjson.loads(e.body) | {"hash": e.hash} for e in store.pending(limit=n, max_bytes=1 << 30)]


def _batch(device: str, docs: list[dict[str, object]], batch_id: str) -> tuple[str, EventBatch]:
    return device, EventBatch(batch_id, device, 0, 1, tuple(docs))


def _results(results: list[IngestResult | Exception]) -> list[IngestResult]:
    assert all(isinstance(r, IngestResult) for r in results), results
    return [r for r in results if isinstance(r, IngestResult)]


def _verified(db: CloudDb, device: str) -> tuple[int, set[str]]:
    rows = db.event_rows(device)
    return len(rows), {chain for _, _, chain in rows}


@pytest.mark.parametrize("fault", ["raises_here", "refused_by_the_database"])
def test_a_batch_failing_inside_a_group_does_not_drop_its_neighbours(tmp_path: Path, cloud_target: CloudTarget,
                                                                      fault: str) -> None:
    """The failing batch sits between the others in lock order, so the group has stored one batch when it fails
    (PostgreSQL: in pipeline mode, its error surfaces at a later statement)."""
    db = cloud_target.open()
    good_a, good_c = _docs(tmp_path, "van-a", 6), _docs(tmp_path, "van-c", 6)
    broken = _docs(tmp_path, "van-b", 6)
    if fault == "raises_here":
        broken = [{k: v for k, v in doc.items() if k != "type"} for doc in broken]
    else:  # a seq beyond a 64-bit integer: PostgreSQL's bigint column (SQLite's driver) refuses it
        broken[3] = broken[3] | {"seq": 2**63}
    results = db.ingest_many([_batch("van-c", good_c, "c1"), _batch("van-b", broken, "b1"),
                              _batch("van-a", good_a, "a1")])
    # handed back with its batch, for the caller's reject path (SQLite's driver refuses the int before SQL runs)
    expected = KeyError if fault == "raises_here" else (CloudDbError, OverflowError)
    assert isinstance(results[1], expected), repr(results[1])
    assert [(r.stored, r.verified_seq) for r in _results([results[0], results[2]])] == [(6, 6), (6, 6)]
    assert _verified(db, "van-a") == _verified(db, "van-c") == (6, {"ok"})
    assert db.event_count("van-b") == 0 and db.flags() == []


def test_duplicates_across_a_group_are_stored_once(tmp_path: Path, cloud_target: CloudTarget) -> None:
    """A resend (new batch id, the same events) in the same group as its original, and one event twice."""
    db = cloud_target.open()
    docs, other = _docs(tmp_path, "van-a", 8), _docs(tmp_path, "van-b", 3)
    results = _results(db.ingest_many([_batch("van-a", docs[:6], "a1"), _batch("van-b", other, "b1"),
                                       _batch("van-a", docs[:6], "a1-again"), _batch("van-a", docs[5:], "a2")]))
    assert [(r.stored, r.duplicates) for r in results] == [(6, 0), (3, 0), (0, 6), (2, 1)]
    assert _verified(db, "van-a") == (8, {"ok"}) and _verified(db, "van-b") == (3, {"ok"})
    assert db.flags() == []
    again = _results(db.ingest_many([_batch("van-a", docs, "a3"), _batch("van-b", other, "b2")]))
    assert [(r.stored, r.duplicates) for r in again] == [(0, 8), (0, 3)]


@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_two_batches_of_one_device_in_one_group_in_either_order(tmp_path: Path, cloud_target: CloudTarget,
                                                                 order: str) -> None:
    """The second batch may come first (another worker's resend, the priority lane): the group walks the chain
    past the gap once the first is stored, and flags nothing."""
    db = cloud_target.open()
    docs = _docs(tmp_path, "van-a", 12)
    first, second = _batch("van-a", docs[:6], "a1"), _batch("van-a", docs[6:], "a2")
    group = [first, second] if order == "in_order" else [second, first]
    results = _results(db.ingest_many([_batch("van-b", _docs(tmp_path, "van-b", 2), "b1"), *group]))
    assert [r.stored for r in results] == [2, 6, 6]
    assert [r.verified_seq for r in results[1:]] == [12, 12]  # the device's chain is walked once, after both
    assert _verified(db, "van-a") == (12, {"ok"}) and db.flags() == []


def test_a_block_claimed_by_two_devices_in_one_group_is_granted_once(cloud_target: CloudTarget) -> None:
    db = cloud_target.open()
    start = datetime(2026, 11, 25, 8, tzinfo=timezone.utc)
    stop = Stop("S1", "1 Main St", "1", 47.6, -122.3, (Package("P1"),))
    for block in ("B1", "B2"):
        db.add_block(Block(block, "DXX1", start, start + timedelta(hours=3)), Route(block, 1, (stop,)))
    claims = [Claim("B1", "van-b", "DXX1"), Claim("B1", "van-a", "DXX1"), Claim("B2", "van-c", "DXX2"),
              Claim("B9", "van-d", "DXX1"), Claim("B1", "van-b", "DXX1")]
    statuses = [r[0] if isinstance(r, tuple) else r for r in db.grant_many(claims, max_open=2)]
    # van-a is the first in device order, which is the group's lock order
    assert statuses == [ClaimStatus.TAKEN, ClaimStatus.GRANTED, ClaimStatus.WRONG_STATION,
                        ClaimStatus.UNKNOWN_BLOCK, ClaimStatus.TAKEN]  # van-b's retry
    assert db.winners() == {"B1": "van-a", "B2": None}
