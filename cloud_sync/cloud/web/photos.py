"""Proof photos as the cloud stores them: a file per photo beside the database, and a `photo_files` row
tying it to its device, event, block and stop with the result of the sha256 check against that event."""
from __future__ import annotations

import logging
from pathlib import Path

from cloud_sync.cloud.web.readonly import ReadOnlyDb

log = logging.getLogger(__name__)


def received(db: ReadOnlyDb, device: str) -> dict[str, str]:
    """photo id -> its check (ok, sha_mismatch, corrupt, awaiting_event)."""
    return dict(db.rows("SELECT photo_id, status FROM photo_files WHERE device = ?", (device,)))


def read(db: ReadOnlyDb, device: str, photo_id: str) -> bytes | None:
    rows = db.rows("SELECT path FROM photo_files WHERE device = ? AND photo_id = ?", (device, photo_id))
    if not rows:
        return None
    try:
        return Path(rows[0][0]).read_bytes()
    except OSError as exc:
        log.error("photo %s of %s: file unreadable: %s", photo_id, device, exc)
        return None
