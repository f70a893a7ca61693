"""The cloud database's schema as numbered migrations, the same for SQLite and PostgreSQL.

Each migration is a list of statements made from the engine's `Dialect` (the one place the engines differ);
`migrate` applies the missing ones in order, each version recorded in `schema_migrations`, all in one
transaction. Workers starting together take turns: SQLite's `BEGIN IMMEDIATE`, PostgreSQL's advisory lock.
Version 1 is written with IF NOT EXISTS, so a database made before migrations existed adopts it as it is.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from cloud_sync.cloud.engine import Dialect, Engine, Tx

log = logging.getLogger(__name__)


def _v1_base(d: Dialect) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS events (
            device TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
            body TEXT NOT NULL, hash TEXT NOT NULL, batch_id TEXT NOT NULL, received_at DOUBLE PRECISION NOT NULL,
            -- hash: the device's checkpoint claim, or '' until the chain walk stores the hash computed here
            chain TEXT NOT NULL DEFAULT 'pending',  -- pending (predecessor not yet here) | ok | broken
            PRIMARY KEY (device, seq)
        ) {d.without_rowid}""",
        """CREATE TABLE IF NOT EXISTS devices (
            device TEXT PRIMARY KEY, verified_seq BIGINT NOT NULL DEFAULT 0,
            verified_hash TEXT NOT NULL, last_batch_at DOUBLE PRECISION, status TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS flags (
            device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, seq, kind)
        )""",
        # Timestamps to distrust, apart from the integrity flags: the stream is whole, the device's clock was not.
        """CREATE TABLE IF NOT EXISTS clock_flags (
            device TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, jump_s DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, seq, kind)
        )""",
        """CREATE TABLE IF NOT EXISTS blocks (
            id TEXT PRIMARY KEY, station TEXT NOT NULL, body TEXT NOT NULL, route TEXT NOT NULL,
            route_version BIGINT NOT NULL, winner TEXT, granted_at DOUBLE PRECISION
        )""",
        "CREATE TABLE IF NOT EXISTS stations (station TEXT PRIMARY KEY, offers_version BIGINT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS completed_blocks (
            id TEXT PRIMARY KEY, device TEXT NOT NULL, at DOUBLE PRECISION NOT NULL
        )""",
        # Chunks of photos still coming in: staging only, deleted once the photo is whole (then it is a file).
        f"""CREATE TABLE IF NOT EXISTS photo_chunks (
            device TEXT NOT NULL, photo_id TEXT NOT NULL, seq BIGINT NOT NULL, total BIGINT NOT NULL,
            sha256 TEXT NOT NULL, data {d.blob} NOT NULL, received_at DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (device, photo_id, seq)
        )""",
        "CREATE INDEX IF NOT EXISTS photo_chunks_age ON photo_chunks (received_at)",
        # A complete photo: the file lives in the photo folder (path), the row ties it to its device, block, stop
        # and the photo.checked event that recorded it, and says whether its sha256 matches that event's.
        """CREATE TABLE IF NOT EXISTS photo_files (
            device TEXT NOT NULL, photo_id TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
            path TEXT NOT NULL, status TEXT NOT NULL, expected_sha256 TEXT, event_id TEXT, block TEXT, stop TEXT,
            detail TEXT, received_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, photo_id)
        )""",
        f"""CREATE INDEX IF NOT EXISTS idx_events_photo ON events (device, {d.json_text('body', 'data', 'photo_id')})
            WHERE type = 'photo.checked'""",
    ]


def _v2_operator_indexes(d: Dialect) -> list[str]:
    return [
        # One device's events of one type (its stop completions, photo checks) without reading its GPS
        # breadcrumbs, and when the newest of them arrived: the operator page's per-device figures.
        "CREATE INDEX IF NOT EXISTS operator_events_by_type ON events (type, device, received_at)",
        "CREATE INDEX IF NOT EXISTS operator_blocks_by_winner ON blocks (winner)",
    ]


def _v3_device_stations(d: Dialect) -> list[str]:
    return [
        # The fleet's stations map (device -> its station) as the cloud was started with it: a station
        # manager sees the vans of their station, not only those that happen to have won a block there.
        "CREATE TABLE IF NOT EXISTS device_stations (device TEXT PRIMARY KEY, station TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS device_stations_by_station ON device_stations (station)",
    ]


def _v4_block_withdrawals(d: Dialect) -> list[str]:
    return [
        # A claimed block the operator re-offered: whom it was taken from and the withdraw_block command that told
        # that van (its command.result, once stored, says what the van did). The van's events stay as they are.
        """CREATE TABLE IF NOT EXISTS block_withdrawals (
            command_id TEXT PRIMARY KEY, block TEXT NOT NULL, device TEXT NOT NULL, station TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS block_withdrawals_by_station ON block_withdrawals (station, device)",
        "CREATE INDEX IF NOT EXISTS block_withdrawals_by_block ON block_withdrawals (block, at)",
    ]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[Dialect], list[str]]


MIGRATIONS = (
    Migration(1, "base schema", _v1_base),
    Migration(2, "operator page indexes", _v2_operator_indexes),
    Migration(3, "device stations", _v3_device_stations),
    Migration(4, "block withdrawals", _v4_block_withdrawals),
)


def migrate(engine: Engine) -> int:
    """Bring the database to the newest version; returns it."""
    with engine.transaction() as tx:
        if engine.dialect.migration_lock:
            tx.execute(engine.dialect.migration_lock)
        tx.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, "
                   "applied_at DOUBLE PRECISION NOT NULL)")
        current = _current(tx)
        if current == 0 and engine.dialect.name == "sqlite":
            _adopt_early_sqlite(tx)
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements(engine.dialect):
                tx.execute(statement)
            tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                       (migration.version, migration.name, time.time()))
            log.info("cloud database %s: migrated to version %d (%s)", engine.target, migration.version,
                     migration.name)
    return MIGRATIONS[-1].version


def _adopt_early_sqlite(tx: Tx) -> None:
    """A SQLite file made before photo chunks had an age gets the column version 1 expects."""
    columns = {row[1] for row in tx.execute("PRAGMA table_info(photo_chunks)").fetchall()}
    if columns and "received_at" not in columns:
        tx.execute("ALTER TABLE photo_chunks ADD COLUMN received_at REAL NOT NULL DEFAULT 0")


def _current(tx: Tx) -> int:
    row = tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])
