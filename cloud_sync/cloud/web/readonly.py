"""The operator page's own connection to the cloud database: read-only (SQLite `mode=ro` + `query_only`),
so nothing the page does can change what the ingest workers stored.

`ensure_indexes` is the one exception, run once at start: indexes the page's queries need on a fleet-sized
database (events by type). An index holds no data of its own; it is created with IF NOT EXISTS, so several
processes may race to it.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0  # an ingest worker holds the write lock for one batch at most
INDEXES = (
    # One device's events of one type (its stop completions, photo checks) without reading its GPS breadcrumbs,
    # and when the newest of them arrived: the version the page's per-device figures are kept under.
    "CREATE INDEX IF NOT EXISTS operator_events_by_type ON events (type, device, received_at)",
    "CREATE INDEX IF NOT EXISTS operator_blocks_by_winner ON blocks (winner)",
)


class ReadDbError(Exception):
    """The cloud database cannot be opened or read."""


def ensure_indexes(path: Path) -> None:
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
        try:
            for statement in INDEXES:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ReadDbError(f"cannot index {path}: {exc}") from exc


class ReadOnlyDb:
    """One connection shared by the page's worker threads; a lock keeps one statement at a time on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise ReadDbError(f"no cloud database at {path}")
        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                        timeout=BUSY_TIMEOUT_S)
            self.conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise ReadDbError(f"cannot open {path} read-only: {exc}") from exc
        self.lock = threading.Lock()

    def rows(self, sql: str, args: dict[str, Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise ReadDbError(f"query failed: {exc}") from exc

    def close(self) -> None:
        with self.lock:
            self.conn.close()
