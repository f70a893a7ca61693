"""Forward schema migrations, tracked in `PRAGMA user_version`, and additions, tracked in `meta`. Each runs in its own
transaction.

A release refuses a store whose `user_version` is newer than it knows (`migrate`), so a migration is for a change an
older release cannot work with: after one, a rollback to the release before it cannot open the store. A new table
that an older release can ignore is an *addition* instead: it never moves `user_version` (the release before it
opens the store and never looks at the table) and is counted under `ADDITIONS_KEY` in `meta`. Additions never
change the tables the migrations made."""
from __future__ import annotations

import logging
from typing import Callable

import sqlite_utils

log = logging.getLogger(__name__)

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []
ADDITIONS: list[Migration] = []
ADDITIONS_KEY = "schema_additions"  # in meta: how many of ADDITIONS this store has


def migration(fn: Migration) -> Migration:
    """Register the next migration; its position in the list is its version number."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_outbox_and_state(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "seq": int,  # device-wide order, no gaps
            "id": str,  # UUIDv7
            "type": str,
            "lane": int,
            "ts": str,
            "mono": float,
            "block": str,
            "stop": str,
            "body": str,  # canonical JSON of the whole event, with seq
            "hash": str,  # sha256(prev hash + body)
            "acked": int,
            "stored_at": float,  # device wall clock at commit, for retention
        },
        pk="seq",
        not_null={"id", "type", "lane", "body", "hash", "acked", "stored_at"},
        defaults={"acked": 0},
    )
    db.table("events").create_index(["id"], unique=True)
    # Partial index: the outbox query only ever looks at pending rows.
    db.execute("CREATE INDEX idx_events_pending ON events(lane, seq) WHERE acked = 0")
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("block_state").create({"key": str, "value": str}, pk="key")
    db.table("routes").create({"block_id": str, "version": int, "body": str, "received_at": str},
                        pk=("block_id", "version"))
    db.table("package_status").create(
        {"package_id": str, "block_id": str, "status": str, "updated_at": str, "event_id": str},
        pk="package_id",
    )
    db.table("photos").create({"photo_id": str, "path": str, "sha256": str, "stop_id": str, "taken_at": str,
                         "event_id": str}, pk="photo_id")


@migration
def m002_photo_uploads(db: sqlite_utils.Database) -> None:
    """The photo index learns the upload copy, the upload's progress and the file's retention."""
    photos = db.table("photos")
    for name, kind in (("upload_path", str), ("upload_sha256", str), ("size", int), ("upload_size", int),
                       ("block", str), ("queued_at", float), ("chunks_done", str), ("uploaded_at", float),
                       ("deleted_at", float)):
        photos.add_column(name, kind)
    # The uploader's queue: committed (queued), not yet in the cloud.
    db.execute("CREATE INDEX idx_photos_upload ON photos(queued_at) WHERE uploaded_at IS NULL")


@migration
def m003_journal(db: sqlite_utils.Database) -> None:
    # Numbered entries of a named journal (the workflow's state changes), replayed onto its last snapshot.
    db.table("journal").create({"name": str, "n": int, "body": str}, pk=("name", "n"), not_null={"body"})


def addition(fn: Migration) -> Migration:
    """Register the next addition (a table older releases ignore); its position in the list is its number."""
    ADDITIONS.append(fn)
    return fn


@addition
def a001_received_commands(db: sqlite_utils.Database) -> None:
    # Commands from the cloud, kept from the moment they are marked seen (device/store/received_commands.py).
    db.table("received_commands").create({"id": str, "name": str, "args": str, "expires_at": float,
                                          "received_at": float}, pk="id", not_null={"name", "args"})


def latest_version() -> int:
    return len(MIGRATIONS)


def migrate(db: sqlite_utils.Database) -> int:
    """Run every migration newer than the file's user_version; return the number run."""
    current: int = db.execute("PRAGMA user_version").fetchone()[0]
    if current > latest_version():
        raise RuntimeError(f"database schema {current} is newer than this program ({latest_version()})")
    for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
        with db.atomic():  # one transaction per step
            step(db)
            db.execute(f"PRAGMA user_version = {version}")
        log.info("schema migrated to version %d (%s)", version, step.__name__)
    return latest_version() - current + _add(db)


def _add(db: sqlite_utils.Database) -> int:
    """Run every addition the store does not have yet; return the number run."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", [ADDITIONS_KEY]).fetchone()
    done = int(row[0]) if row else 0
    for number, step in enumerate(ADDITIONS[done:], start=done + 1):
        with db.atomic():
            step(db)
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [ADDITIONS_KEY, str(number)])
        log.info("schema addition %d (%s)", number, step.__name__)
    return max(len(ADDITIONS) - done, 0)
