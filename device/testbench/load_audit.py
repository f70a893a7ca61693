"""What a fleet load run left in the cloud's database, held against what the simulated vans made, and the raw
insert ceiling of the same rows into the same table.

The cloud's database is a SQLite file or a PostgreSQL URL (`postgresql://...`); the audit reads it with plain SQL
that both engines run. A van's events are seqs 1..produced ending at its chain head: the cloud holds all of them
exactly when it has `produced` rows for the van, no id twice, and its verified chain head is the van's (the
sha256 chain then vouches for every row's content too).

The ceiling: every stored event row deleted and bulk-inserted again into the same table, timed: `executemany`
in one transaction into SQLite (WAL, synchronous=FULL as the cloud runs it), `COPY` into PostgreSQL.
"""
from __future__ import annotations

import importlib
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

EVENT_COLUMNS = ("device", "seq", "id", "type", "body", "hash", "batch_id", "received_at", "chain")


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class DeviceRows:
    rows: int
    distinct_ids: int
    max_seq: int
    chain_ok: int  # rows the cloud verified in chain order
    verified_seq: int
    verified_hash: str


@dataclass(frozen=True)
class Audit:
    """Totals over every van: `produced` by the vans, `lost` (made, not stored), `duplicates` (one event id
    stored twice), `unexpected` (rows beyond a van's last seq), `chain_mismatch` (vans whose verified chain head
    is not their own), integrity `flags` and `clock_flags` raised by the cloud, and the blocks' winners."""

    produced: int
    stored: int
    lost: int
    duplicates: int
    unexpected: int
    chain_mismatch: int
    flags: dict[str, int]
    clock_flags: int
    winners: dict[str, str | None]


def _rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    if is_postgres(db):
        psycopg = importlib.import_module("psycopg")
        with psycopg.connect(db) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def audit(db: str, produced: Mapping[str, tuple[int, str]]) -> Audit:
    """`produced`: device -> (events made, the hash of the last one)."""
    per_device = {row[0]: row[1:] for row in _rows(
        db, "SELECT device, COUNT(*), COUNT(DISTINCT id), MAX(seq), "
            "SUM(CASE WHEN chain = 'ok' THEN 1 ELSE 0 END) FROM events GROUP BY device")}
    heads = {row[0]: (int(row[1]), str(row[2])) for row in _rows(db, "SELECT device, verified_seq, verified_hash "
                                                                      "FROM devices")}
    lost = duplicates = unexpected = mismatch = stored = 0
    for device, (made, head) in produced.items():
        count, distinct, max_seq, _ = (int(v or 0) for v in per_device.get(device, (0, 0, 0, 0)))
        beyond = max(0, max_seq - made)
        stored += count
        duplicates += count - distinct
        unexpected += beyond
        lost += made - min(made, count - beyond)
        if made and heads.get(device) != (made, head):
            mismatch += 1
    strangers = set(per_device) - set(produced)
    unexpected += sum(int(per_device[d][0]) for d in strangers)
    flags = {str(kind): int(n) for kind, n in _rows(db, "SELECT kind, COUNT(*) FROM flags GROUP BY kind")}
    clock = int(_rows(db, "SELECT COUNT(*) FROM clock_flags")[0][0])
    winners = {str(block): (str(winner) if winner is not None else None)
               for block, winner in _rows(db, "SELECT id, winner FROM blocks")}
    return Audit(sum(made for made, _ in produced.values()), stored, lost, duplicates, unexpected, mismatch, flags,
                 clock, winners)


@dataclass(frozen=True)
class Ceiling:
    rows: int
    seconds: float
    method: str

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def insert_ceiling(db: str) -> Ceiling:
    """Take every event row out of the events table and bulk-insert the same rows again, timed (the cloud must
    be stopped). The table ends as it was."""
    columns = ", ".join(EVENT_COLUMNS)
    if is_postgres(db):
        return _copy_ceiling(db, columns)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # as the cloud writes
        rows = conn.execute(f"SELECT {columns} FROM events").fetchall()
        conn.execute("DELETE FROM events")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        marks = ", ".join("?" for _ in EVENT_COLUMNS)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT INTO events ({columns}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
        return Ceiling(len(rows), time.perf_counter() - started, "sqlite executemany, one transaction")
    finally:
        conn.close()


def _copy_ceiling(db: str, columns: str) -> Ceiling:
    psycopg = importlib.import_module("psycopg")
    with psycopg.connect(db) as conn:
        rows: list[tuple[Any, ...]] = conn.execute(f"SELECT {columns} FROM events").fetchall()
        conn.execute("TRUNCATE events")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return Ceiling(len(rows), time.perf_counter() - started, "postgresql COPY, one transaction")


# --- PostgreSQL: a scratch database per run -------------------------------------------------------------


def create_scratch_database(server_url: str, name: str) -> str:
    """CREATE DATABASE `name` on the server of `server_url` (its role needs CREATEDB); the URL of the new one."""
    psycopg = importlib.import_module("psycopg")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def drop_database(server_url: str, name: str) -> None:
    psycopg = importlib.import_module("psycopg")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(db: str) -> list[int]:
    """The server processes serving connections to this PostgreSQL database (the cloud workers')."""
    return [int(pid) for (pid,) in _rows(db, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                             "AND pid <> pg_backend_pid()")]
