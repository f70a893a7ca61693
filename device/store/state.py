"""The state the agent keeps beside the outbox, in the same database and on the same writer thread: key/value
documents (the workflow's journal, the sync's upload list and seen commands), the routes received, and the index
of proof photos. `EventStore.state` is one of these.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import sqlite_utils

from device.contract.domain import Route

Call = Callable[[Callable[[sqlite_utils.Database], Any]], Any]  # runs a function on the store's writer thread


class StoreState:
    def __init__(self, call: Call, clock: Callable[[], float]) -> None:
        self._call = call
        self._clock = clock

    def set(self, key: str, value: Any) -> None:
        def write(db: sqlite_utils.Database) -> None:
            with db.atomic():
                db.conn.execute("INSERT OR REPLACE INTO block_state (key, value) VALUES (?, ?)",
                                [key, json.dumps(value)])
        self._call(write)

    def get(self, key: str, default: Any = None) -> Any:
        row = self._call(lambda db: db.conn.execute(
            "SELECT value FROM block_state WHERE key = ?", [key]).fetchone())
        return default if row is None else json.loads(row[0])

    def save_route(self, route: Route) -> bool:
        """Keep a route version; True if it is newer than every stored version of its block."""
        def write(db: sqlite_utils.Database) -> bool:
            with db.atomic():
                newest = db.conn.execute("SELECT MAX(version) FROM routes WHERE block_id = ?",
                                         [route.block_id]).fetchone()[0]
                if newest is not None and route.version <= newest:
                    return False
                db.conn.execute("INSERT INTO routes (block_id, version, body, received_at) VALUES (?, ?, ?, ?)",
                                [route.block_id, route.version, json.dumps(route.to_dict()), str(self._clock())])
                return True
        return self._call(write)

    def record_photo(self, photo_id: str, path: str, sha256: str, *, stop_id: str | None = None,
                     taken_at: str | None = None, event_id: str | None = None) -> None:
        def write(db: sqlite_utils.Database) -> None:
            with db.atomic():
                db.conn.execute(
                    "INSERT OR REPLACE INTO photos (photo_id, path, sha256, stop_id, taken_at, event_id) "
                    "VALUES (?, ?, ?, ?, ?, ?)", [photo_id, path, sha256, stop_id, taken_at, event_id])
        self._call(write)

    def photo(self, photo_id: str) -> dict[str, Any] | None:
        def read(db: sqlite_utils.Database) -> dict[str, Any] | None:
            rows = list(db["photos"].rows_where("photo_id = ?", [photo_id]))
            return rows[0] if rows else None
        return self._call(read)
