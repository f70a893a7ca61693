"""The operator page's own connection to the cloud database, read-only so nothing the page does can change
what the ingest workers stored: on SQLite a `mode=ro` + `query_only` connection, on PostgreSQL a pool whose
every transaction is READ ONLY (`default_transaction_read_only`). Queries are written once with `?` or `:name`
parameters; what the engines spell differently comes from `dialect` (cloud_sync/cloud/engine.py). The indexes
its queries need on a fleet-sized database (events by type, blocks by winner) come with the schema's
migrations (cloud_sync/cloud/schema.py), which every cloud process runs when it opens the database.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from cloud_sync.cloud.engine import POSTGRES, SQLITE, CloudDbError, Dialect, PostgresEngine, is_postgres

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0  # an ingest worker holds the write lock for one batch at most


class ReadDbError(Exception):
    """The cloud database cannot be opened or read."""


class ReadOnlyDb:
    """SQLite: one connection shared by the page's worker threads, a lock keeps one statement at a time on it.
    PostgreSQL: the engine's pool, one connection per concurrent query."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        self.dialect: Dialect = POSTGRES if is_postgres(target) else SQLITE
        self._pg: PostgresEngine | None = None
        self.lock = threading.Lock()
        if is_postgres(target):
            try:
                self._pg = PostgresEngine(str(target), read_only=True)
            except CloudDbError as exc:
                raise ReadDbError(str(exc)) from exc
            return
        path = Path(target)
        if not path.is_file():
            raise ReadDbError(f"no cloud database at {path}")
        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                        timeout=BUSY_TIMEOUT_S)
            self.conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise ReadDbError(f"cannot open {path} read-only: {exc}") from exc

    def rows(self, sql: str, args: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._pg is not None:
            try:
                return self._pg.read(sql, args)
            except CloudDbError as exc:
                raise ReadDbError(f"query failed: {exc}") from exc
        with self.lock:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise ReadDbError(f"query failed: {exc}") from exc

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            return
        with self.lock:
            self.conn.close()
