"""Proof photos as the cloud stores them: in a `photo_files` table (a file per photo beside the database,
with its link to the event and the result of the sha256 check) or, in the older schema, as blobs in a
`photos` table. The page reads whichever the database has."""
from __future__ import annotations

import logging
from pathlib import Path

from cloud_sync.cloud.web.readonly import ReadOnlyDb

log = logging.getLogger(__name__)

FILES = "photo_files"
BLOBS = "photos"


def _table(db: ReadOnlyDb) -> str | None:
    names = {name for (name,) in db.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)",
                                         (FILES, BLOBS))}
    return FILES if FILES in names else BLOBS if BLOBS in names else None


def received(db: ReadOnlyDb, device: str) -> dict[str, str]:
    """photo id -> its check (ok, sha_mismatch, corrupt, awaiting_event; 'ok' for the blob schema)."""
    table = _table(db)
    if table == FILES:
        return dict(db.rows("SELECT photo_id, status FROM photo_files WHERE device = ?", (device,)))
    if table == BLOBS:
        return {photo_id: "ok" for (photo_id,) in db.rows("SELECT photo_id FROM photos WHERE device = ?", (device,))}
    return {}


def read(db: ReadOnlyDb, device: str, photo_id: str) -> bytes | None:
    table = _table(db)
    if table == FILES:
        rows = db.rows("SELECT path FROM photo_files WHERE device = ? AND photo_id = ?", (device, photo_id))
        if not rows:
            return None
        try:
            return Path(rows[0][0]).read_bytes()
        except OSError as exc:
            log.error("photo %s of %s: file unreadable: %s", photo_id, device, exc)
            return None
    if table == BLOBS:
        rows = db.rows("SELECT data FROM photos WHERE device = ? AND photo_id = ?", (device, photo_id))
        return bytes(rows[0][0]) if rows else None
    return None
