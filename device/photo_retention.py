"""Proof photo files on the device's disk: deleted only once the cloud holds them.

A photo's files (the original and its upload copy) go when its upload was acknowledged and `max_age_s` has
passed since; when the photo disk runs low, acknowledged photos go at once, oldest first, until the free space
is back above `min_free_bytes`. A photo the cloud has not acknowledged is never deleted, however full the disk.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from device.store import EventStore
from device.store.photo_index import PhotoFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoRetentionPolicy:
    max_age_s: float = 7 * 86400.0  # after the cloud's ack (store.retention_days)
    min_free_bytes: int = 200 * 1024 * 1024  # photos.min_free_mb


@dataclass(frozen=True)
class SweepReport:
    deleted: int
    freed_bytes: int
    low_disk: bool  # the disk was under min_free_bytes when the sweep started
    failed: int = 0  # files that could not be removed (kept in the index, tried again next sweep)


class PhotoRetention:
    """`sweep()` from a worker thread (file system and store calls block)."""

    def __init__(self, store: EventStore, photo_dir: Path, policy: PhotoRetentionPolicy, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.photo_dir = Path(photo_dir)
        self.policy = policy
        self._clock = clock

    def free_bytes(self) -> int:
        folder = self.photo_dir if self.photo_dir.exists() else self.photo_dir.parent
        return shutil.disk_usage(folder).free

    def _delete(self, photo: PhotoFile) -> tuple[int, bool]:
        """(bytes freed, removed). A file already gone counts as removed."""
        freed = 0
        for path in photo.paths:
            try:
                size = os.stat(path).st_size
                os.unlink(path)
                freed += size
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("photo %s: cannot delete %s: %s", photo.photo_id, path, exc)
                return freed, False
        self.store.state.photo_deleted(photo.photo_id)
        return freed, True

    def sweep(self) -> SweepReport:
        deleted = freed = failed = 0
        for photo in self.store.state.deletable_photos(self._clock() - self.policy.max_age_s):
            size, ok = self._delete(photo)
            deleted, freed, failed = deleted + ok, freed + size, failed + (not ok)
        low = self.free_bytes() < self.policy.min_free_bytes
        if low:
            for photo in self.store.state.deletable_photos(None):  # oldest acknowledged first
                if self.free_bytes() >= self.policy.min_free_bytes:
                    break
                size, ok = self._delete(photo)
                deleted, freed, failed = deleted + ok, freed + size, failed + (not ok)
            if self.free_bytes() < self.policy.min_free_bytes:
                log.warning("photo disk still low (%d bytes free < %d): the rest await the cloud's ack",
                            self.free_bytes(), self.policy.min_free_bytes)
        if deleted:
            log.info("photo retention: %d photos deleted, %d bytes freed%s", deleted, freed,
                     " (low disk)" if low else "")
        return SweepReport(deleted, freed, low, failed)
