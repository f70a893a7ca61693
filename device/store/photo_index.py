"""The photo index: which proof photos exist, which are queued for upload, how far each upload got, which files
retention has removed. Plain functions on the store's connection; EventStore runs them through its one writer.

A photo is queued for upload once the event that records it (photo.checked) is committed; a chunk's ack adds
its index to `chunks_done`, the last one sets `uploaded_at`. Retention may delete a file only after that.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

PHOTO_CHECKED = "photo.checked"  # the event type that records a photo (device.domain.EventType.PHOTO_CHECKED)
CHUNK_ESTIMATE = 64 * 1024  # cloud_sync.messages.PHOTO_CHUNK_BYTES (the store does not import cloud_sync)


@dataclass(frozen=True)
class PhotoUpload:
    """One queued photo: the file that goes up (the upload copy, else the original) and its progress."""

    photo_id: str
    path: str
    sha256: str
    size: int
    chunks_done: frozenset[int]


@dataclass(frozen=True)
class PhotoFile:
    """A photo whose files may be deleted (its upload is acknowledged)."""

    photo_id: str
    paths: tuple[str, ...]  # the original and the upload copy (when it is another file)
    uploaded_at: float


@dataclass(frozen=True)
class PhotoStats:
    pending: int  # committed, not yet acknowledged by the cloud
    pending_bytes: int  # what is left to send of them (upload copies)
    uploaded: int
    on_disk: int  # photos whose files retention has not removed
    on_disk_bytes: int  # originals plus upload copies


def record(db: sqlite_utils.Database, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    with db.atomic():
        db.conn.execute(f"INSERT OR REPLACE INTO photos ({columns}) VALUES ({marks})", list(row.values()))


def queue(db: sqlite_utils.Database, photo_id: str, event_id: str | None, block: str | None, now: float) -> bool:
    """The photo's event is committed: queue it for upload (after that event is acknowledged). False for an
    unknown photo."""
    with db.atomic():
        return db.conn.execute("UPDATE photos SET event_id = ?, block = ?, queued_at = COALESCE(queued_at, ?) "
                               "WHERE photo_id = ?", [event_id, block, now, photo_id]).rowcount == 1


def queue_committed(db: sqlite_utils.Database, now: float) -> int:
    """Queue photos whose event was committed but not linked (the agent stopped in between). At start-up."""
    with db.atomic():
        return db.conn.execute(
            "UPDATE photos SET (event_id, block, queued_at) = (SELECT e.id, e.block, ? FROM events e "
            "WHERE e.type = ? AND json_extract(e.body, '$.data.photo_id') = photos.photo_id) "
            "WHERE queued_at IS NULL AND EXISTS (SELECT 1 FROM events e WHERE e.type = ? "
            "AND json_extract(e.body, '$.data.photo_id') = photos.photo_id)",
            [now, PHOTO_CHECKED, PHOTO_CHECKED]).rowcount


def uploads(db: sqlite_utils.Database, limit: int = 16) -> list[PhotoUpload]:
    """The oldest queued photos not yet acknowledged, in the order they were committed."""
    # Events first: a photo goes only once the cloud acknowledged the event that records it.
    rows = db.conn.execute(
        "SELECT photo_id, COALESCE(upload_path, path), COALESCE(upload_sha256, sha256), "
        "COALESCE(upload_size, size, 0), chunks_done FROM photos p WHERE uploaded_at IS NULL "
        "AND queued_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = p.event_id "
        "AND e.acked = 0) ORDER BY queued_at, photo_id LIMIT ?", [limit]).fetchall()
    return [PhotoUpload(pid, path, sha, size, frozenset(json.loads(done or "[]")))
            for pid, path, sha, size, done in rows]


def chunk_acked(db: sqlite_utils.Database, photo_id: str, index: int, total: int, now: float) -> bool:
    """Record a chunk's ack; True when it was the last one missing (the photo is in the cloud)."""
    with db.atomic():
        row = db.conn.execute("SELECT chunks_done, uploaded_at FROM photos WHERE photo_id = ?",
                              [photo_id]).fetchone()
        if row is None or row[1] is not None:
            return False
        done = set(json.loads(row[0] or "[]")) | {index}
        finished = len(done) >= total
        db.conn.execute("UPDATE photos SET chunks_done = ?, uploaded_at = ? WHERE photo_id = ?",
                        [json.dumps(sorted(done)), now if finished else None, photo_id])
        return finished


def give_up(db: sqlite_utils.Database, photo_id: str) -> None:
    """The file is gone: leave the queue (the cloud will never get it; the caller counts and logs it)."""
    with db.atomic():
        db.conn.execute("UPDATE photos SET queued_at = NULL WHERE photo_id = ?", [photo_id])


def deletable(db: sqlite_utils.Database, uploaded_before: float | None) -> list[PhotoFile]:
    """Acknowledged photos still on disk, oldest upload first; only those acknowledged before the cutoff
    (None: all of them, for low disk). Unacknowledged photos are never listed."""
    where, args = ("AND uploaded_at < ?", [uploaded_before]) if uploaded_before is not None else ("", [])
    rows = db.conn.execute(f"SELECT photo_id, path, upload_path, uploaded_at FROM photos WHERE uploaded_at IS NOT "
                           f"NULL AND deleted_at IS NULL {where} ORDER BY uploaded_at, photo_id", args).fetchall()
    return [PhotoFile(pid, tuple(dict.fromkeys(p for p in (path, upload) if p)), at)
            for pid, path, upload, at in rows]


def deleted(db: sqlite_utils.Database, photo_id: str, now: float) -> None:
    with db.atomic():
        db.conn.execute("UPDATE photos SET deleted_at = ? WHERE photo_id = ?", [now, photo_id])


def stats(db: sqlite_utils.Database) -> PhotoStats:
    pending_rows = db.conn.execute(
        "SELECT COALESCE(upload_size, size, 0), chunks_done FROM photos "
        "WHERE uploaded_at IS NULL AND queued_at IS NOT NULL").fetchall()
    pending_bytes = 0
    for size, done in pending_rows:  # what is left: the chunks not yet acknowledged, about
        sent = len(json.loads(done or "[]"))
        pending_bytes += max(0, size - sent * CHUNK_ESTIMATE)
    uploaded = db.conn.execute("SELECT COUNT(*) FROM photos WHERE uploaded_at IS NOT NULL").fetchone()[0]
    on_disk, on_disk_bytes = db.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(COALESCE(size, 0) + CASE WHEN upload_path IS NOT NULL "
        "AND upload_path != path THEN COALESCE(upload_size, 0) ELSE 0 END), 0) FROM photos "
        "WHERE deleted_at IS NULL").fetchone()
    return PhotoStats(len(pending_rows), pending_bytes, uploaded, on_disk, on_disk_bytes)

