"""The operator page's own connection to the cloud database: read-only (SQLite `mode=ro` + `query_only`),
so nothing the page does can change what the ingest workers stored. The indexes its queries need on a
fleet-sized database (events by type, blocks by winner) come with the schema's migrations
(cloud_sync/cloud/schema.py), which every cloud process runs when it opens the database.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0  # an ingest worker holds the write lock for one batch at most


class ReadDbError(Exception):
    """The cloud database cannot be opened or read."""


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
