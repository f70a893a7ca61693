"""The state the agent keeps beside the outbox, in the same database and through the same one writer: key/value
documents (the workflow's snapshot, the sync's seen commands), named journals (the workflow's changes since its
snapshot), the routes received, and the index of proof photos (device/store/photo_index.py: the upload queue and
its progress, retention). `EventStore.state` is one of these.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, NamedTuple, Protocol, TypeVar

import sqlite_utils

from device.contract.domain import Route
from device.store import photo_index, received_commands
from device.store.received_commands import ReceivedCommand

INSERT_JOURNAL = "INSERT INTO journal (name, n, body) VALUES (?, ?, ?)"


class JournalEntry(NamedTuple):
    """Entry `n` of the journal `name`; `body` is JSON text. Appended with events, it commits in their
    transaction (EventStore.append_async(..., journal=entry))."""

    name: str
    n: int
    body: str


def insert_journal(conn: sqlite3.Connection, entry: JournalEntry) -> None:
    conn.execute(INSERT_JOURNAL, entry)


T = TypeVar("T")


class Call(Protocol):
    """Runs a function on the store's one writer (its connection) and returns its result."""

    def __call__(self, fn: Callable[[sqlite_utils.Database], T], /) -> T: ...


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

    def write_journal(self, entry: JournalEntry) -> None:
        """Commit one journal entry alone (without events)."""
        def write(db: sqlite_utils.Database) -> None:
            with db.atomic():
                insert_journal(db.conn, entry)
        self._call(write)

    def journal(self, name: str, after: int = 0) -> list[tuple[int, Any]]:
        """The entries of a journal numbered above `after`, in order, as (n, parsed body)."""
        rows = self._call(lambda db: db.conn.execute(
            "SELECT n, body FROM journal WHERE name = ? AND n > ? ORDER BY n", [name, after]).fetchall())
        return [(n, json.loads(body)) for n, body in rows]

    def compact_journal(self, name: str, key: str, snapshot: Any, upto: int) -> None:
        """In one transaction: keep `snapshot` under `key` and drop the journal's entries up to `upto`, which
        the snapshot includes."""
        def write(db: sqlite_utils.Database) -> None:
            with db.atomic():
                db.conn.execute("INSERT OR REPLACE INTO block_state (key, value) VALUES (?, ?)",
                                [key, json.dumps(snapshot)])
                db.conn.execute("DELETE FROM journal WHERE name = ? AND n <= ?", [name, upto])
        self._call(write)

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
                     taken_at: str | None = None, event_id: str | None = None, upload_path: str | None = None,
                     upload_sha256: str | None = None, size: int | None = None,
                     upload_size: int | None = None) -> None:
        row = {"photo_id": photo_id, "path": path, "sha256": sha256, "stop_id": stop_id, "taken_at": taken_at,
               "event_id": event_id, "upload_path": upload_path, "upload_sha256": upload_sha256, "size": size,
               "upload_size": upload_size}
        self._call(lambda db: photo_index.record(db, row))

    def photo(self, photo_id: str) -> dict[str, Any] | None:
        def read(db: sqlite_utils.Database) -> dict[str, Any] | None:
            rows = list(db["photos"].rows_where("photo_id = ?", [photo_id]))
            return rows[0] if rows else None
        return self._call(read)

    # --- commands from the cloud (device/store/received_commands.py) -------------------------------

    def receive_command(self, seen_key: str, command: ReceivedCommand) -> bool:
        """Mark a command seen and keep it, in one transaction; False when its id was seen before (a replay)."""
        return self._call(lambda db: received_commands.receive(db, seen_key, command))

    def received_commands(self) -> list[ReceivedCommand]:
        return self._call(received_commands.received)

    def forget_command(self, command_id: str) -> None:
        self._call(lambda db: received_commands.forget(db, command_id))

    # --- proof photos on their way to the cloud (device/store/photo_index.py) ----------------------

    def queue_photo(self, photo_id: str, event_id: str | None, block: str | None = None) -> bool:
        return self._call(lambda db: photo_index.queue(db, photo_id, event_id, block, self._clock()))

    def queue_committed_photos(self) -> int:
        return self._call(lambda db: photo_index.queue_committed(db, self._clock()))

    def photo_uploads(self, limit: int = 16) -> list[photo_index.PhotoUpload]:
        return self._call(lambda db: photo_index.uploads(db, limit))

    def photo_chunk_acked(self, photo_id: str, index: int, total: int) -> bool:
        return self._call(lambda db: photo_index.chunk_acked(db, photo_id, index, total, self._clock()))

    def photo_upload_failed(self, photo_id: str) -> None:
        self._call(lambda db: photo_index.give_up(db, photo_id))

    def deletable_photos(self, uploaded_before: float | None) -> list[photo_index.PhotoFile]:
        return self._call(lambda db: photo_index.deletable(db, uploaded_before))

    def photo_deleted(self, photo_id: str) -> None:
        self._call(lambda db: photo_index.deleted(db, photo_id, self._clock()))

    def photo_stats(self) -> photo_index.PhotoStats:
        return self._call(photo_index.stats)
