"""Forward schema migrations, tracked in `PRAGMA user_version`, and additions, tracked in `meta`. Each runs in its own
transaction.

A release update may be rolled back (device/update/): the previous release then opens a store the newer one
migrated. `READABLE_FROM` is the oldest program schema that still reads a store at `latest_version()` (a
migration that only adds tables, columns or indexes keeps it; one that changes or drops what older code reads
raises it to its own version). The store records it, an older program opens such a store as it is, and the
release manifest carries it so a van refuses an update its running release could not come back from.

Releases before `READABLE_FROM` was recorded refuse any store whose `user_version` is newer than they know, so a
new table an older release can ignore is an *addition* instead: it never moves `user_version` (the release before
it opens the store and never looks at the table) and is counted under `ADDITIONS_KEY` in `meta`. Additions never
change the tables the migrations made."""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

import sqlite_utils

log = logging.getLogger(__name__)

READABLE_FROM = 1  # every migration so far only adds: a program at schema 1 reads a store at schema 3
READABLE_FROM_KEY = "schema.readable_from"  # in the meta table

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
        readable_from = _readable_from(db)
        if readable_from is None or readable_from > latest_version():
            raise RuntimeError(f"database schema {current} is newer than this program ({latest_version()})")
        log.warning("database schema %d is newer than this program (%d) but readable from %d: used as it is",
                    current, latest_version(), readable_from)
        return 0
    for version, step in enumerate(MIGRATIONS[current:], start=current + 1):
        with db.atomic():  # one transaction per step
            step(db)
            db.execute(f"PRAGMA user_version = {version}")
        log.info("schema migrated to version %d (%s)", version, step.__name__)
    with db.atomic():
        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [READABLE_FROM_KEY, str(READABLE_FROM)])
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


def _readable_from(db: sqlite_utils.Database) -> int | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", [READABLE_FROM_KEY]).fetchone()
    except sqlite3.OperationalError:  # no meta table: not a store of ours
        return None
    return int(row[0]) if row and str(row[0]).isdigit() else None
