"""The PostgreSQL cloud's connection pool after its connections died: a server restart, or backends terminated by
an administrator (`pg_terminate_backend`). A pooled connection is checked when taken, so the next transaction runs
on a live connection; a running cloud keeps ingesting, loses nothing and stores nothing twice."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cloud_sync.cloud import CloudDb
from cloud_sync.cloud.engine import PostgresEngine
from cloud_sync.messages import ClaimStatus, EventBatch
from device.contract.domain import Event, EventType
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.testbench.postgres import PostgresServer
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import FleetPki
from tests.helpers.sync_harness import (
    assert_cloud_holds_exactly,
    drain_with_faults,
    mixed_events,
    start_cloud,
)

ENGINE_LOG = "cloud_sync.cloud.engine"


def terminate_backends(url: str) -> int:
    """What an administrator (or a failover) does to every session on the database but this one: how many."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def _batches(tmp_path: Path, device: str, n: int, size: int) -> list[EventBatch]:
    """`n` batches of `size` events of a device's own store (ids and hash chain as the device makes them)."""
    with EventStore(tmp_path / f"{device}.db") as store:
        store.append_many([Event(EventType.GPS_FIX, {"n": i}) for i in range(n * size)])
        docs = [orjson.loads(e.body) | {"hash": e.hash} for e in store.pending(limit=n * size, max_bytes=1 << 30)]
    return [EventBatch(f"b{k}", device, 0, 1, tuple(docs[k * size:(k + 1) * size])) for k in range(n)]


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: the restart would cut the session server's other users."""
    with PostgresServer() as server:
        yield server


def _dead_connections(db: CloudDb) -> int:
    assert isinstance(db.engine, PostgresEngine)
    return db.engine.dead_connections


@pytest.mark.parametrize("fault", ["restart", "terminate"])
def test_the_transaction_after_the_connections_died_runs_on_a_live_one(
        own_postgres: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str) -> None:
    """Every pooled connection dies between two ingests (no transaction open); the next ingest and the next claim
    succeed at their first try, and the dead connections are counted and logged."""
    url = own_postgres.create_database(f"pool_{fault}")
    db = CloudDb(url, tmp_path / "photos")
    try:
        first, second, third = _batches(tmp_path, "van-a", 3, 20)
        assert db.ingest("van-a", first).stored == 20
        if fault == "restart":
            own_postgres.restart()
        else:
            assert terminate_backends(url) >= 1
        with caplog.at_level(logging.WARNING, logger=ENGINE_LOG):
            assert db.ingest("van-a", second).stored == 20
            assert isinstance(db.grant("B1", "van-a", None, max_open=1)[0], ClaimStatus)  # a transaction that ran
        assert _dead_connections(db) >= 1
        assert any("dead when taken" in r.getMessage() for r in caplog.records if r.name == ENGINE_LOG)
        assert db.ingest("van-a", third).stored == 20
        assert db.event_count("van-a") == 60
    finally:
        db.close()


@pytest.mark.parametrize("cloud_target", ["postgresql"], indirect=True)  # SQLite has no server to lose
def test_a_running_cloud_whose_backends_are_terminated_keeps_ingesting(
        tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path, cloud_target: CloudTarget,
        caplog: pytest.LogCaptureFixture) -> None:
    """While a van drains 3,000 events into a cloud of two ingest workers and a dispatcher, every backend of the
    cloud's database is terminated five times. The cloud keeps running; each event is stored once with its chain
    whole; the dead connections are logged, and the transactions they cut are counted as database errors (not
    acked: the van resends)."""
    assert isinstance(cloud_target.db, str)
    url = cloud_target.db
    cloud = start_cloud(fleet, tls_broker.port, cloud_target, workers=2)
    store = EventStore(tmp_path / "van-a.db")
    events = mixed_events(3000)
    store.append_many(events)
    db = cloud_target.open()
    terminated: list[int] = []

    async def terminate(_round: int) -> None:
        terminated.append(terminate_backends(url))

    try:
        with caplog.at_level(logging.WARNING, logger=ENGINE_LOG):
            asyncio.run(drain_with_faults(fleet, store, tls_broker.port, lambda: db.event_count("van-a"), 500,
                                          terminate))
        assert cloud.running
        assert cloud.peer is not None
        counters = cloud.peer.counters
    finally:
        cloud.stop()
        store.close()
        db.close()
    logging.getLogger(__name__).info("terminated %s backends; cloud counters %s", terminated, dict(counters))
    assert len(terminated) == 5 and all(n >= 1 for n in terminated), terminated
    assert any("dead when taken" in r.getMessage() for r in caplog.records if r.name == ENGINE_LOG)
    assert counters["rejected"] == 0
    assert_cloud_holds_exactly(cloud_target, "van-a", [e.id for e in events])
