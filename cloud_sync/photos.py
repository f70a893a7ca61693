"""Proof photos going up in resumable chunks: the upload list lives in the store (photo id -> path, sha256, chunk
count, chunks acked), so an upload resumes after an outage or a restart from the first chunk not yet acked.
The uplink sends a chunk only while no event is waiting, and hands the chunk acks back here.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Callable

from cloud_sync.errors import SyncError
from cloud_sync.messages import PHOTO_CHUNK_BYTES, PhotoChunk
from cloud_sync.sync_settings import SyncCounters
from cloud_sync.topics import DeviceTopics
from device.contract.domain import new_event_id
from device.store import EventStore

log = logging.getLogger(__name__)

PHOTO_UPLOADS_KEY = "cloud_sync.photo_uploads"  # store state: photo id -> {path, sha256, total, done: [chunks]}


class PhotoUploads:
    def __init__(self, store: EventStore, topics: DeviceTopics, counters: SyncCounters,
                 kick: Callable[[], None]) -> None:
        self.store = store
        self.topics = topics
        self.counters = counters
        self._kick = kick
        self._lock = asyncio.Lock()  # read-modify-write of the upload list in the store

    async def add(self, photo_id: str, path: Path | str) -> None:
        """Queue a photo for upload, after the events (a lower priority)."""
        self.topics.photo(photo_id)  # a valid topic level, or ValueError

        def read() -> tuple[str, int]:
            data = Path(path).read_bytes()
            if not data:
                raise SyncError(f"photo {path} is empty")
            return hashlib.sha256(data).hexdigest(), -(-len(data) // PHOTO_CHUNK_BYTES)

        try:
            sha256, total = await asyncio.to_thread(read)
        except OSError as exc:
            raise SyncError(f"cannot read photo {path}: {exc}") from exc
        async with self._lock:
            uploads = await asyncio.to_thread(self.store.state.get, PHOTO_UPLOADS_KEY, {})
            uploads.setdefault(photo_id, {"path": str(path), "sha256": sha256, "total": total, "done": []})
            await asyncio.to_thread(self.store.state.set, PHOTO_UPLOADS_KEY, uploads)
        self._kick()

    async def pending(self) -> list[str]:
        return list(await asyncio.to_thread(self.store.state.get, PHOTO_UPLOADS_KEY, {}))

    async def next_chunk(self, busy: set[tuple[str, int]]) -> PhotoChunk | str | None:
        """The first chunk neither acked nor in flight (`busy`: (photo id, chunk index)); or the id of a photo
        whose file is gone (dropped from the list and counted); None when there is nothing to send."""
        async with self._lock:
            chunk = await asyncio.to_thread(self._next_chunk, busy)
        if isinstance(chunk, str):
            self.counters.photos_failed += 1
        return chunk

    def _next_chunk(self, busy: set[tuple[str, int]]) -> PhotoChunk | str | None:
        """Store thread: read the chunk from its file."""
        uploads = self.store.state.get(PHOTO_UPLOADS_KEY, {})
        for photo_id, upload in uploads.items():
            done = set(upload["done"])
            for index in range(upload["total"]):
                if index in done or (photo_id, index) in busy:
                    continue
                try:
                    with open(upload["path"], "rb") as fh:
                        fh.seek(index * PHOTO_CHUNK_BYTES)
                        data = fh.read(PHOTO_CHUNK_BYTES)
                except OSError as exc:
                    data, problem = b"", str(exc)
                else:
                    problem = "file shorter than when it was queued"
                if not data:
                    log.error("photo %s dropped from the upload list: %s", photo_id, problem)
                    del uploads[photo_id]
                    self.store.state.set(PHOTO_UPLOADS_KEY, uploads)
                    return photo_id
                return PhotoChunk(new_event_id(), photo_id, index, upload["total"], upload["sha256"], data)
        return None

    async def acked(self, photo_id: str, index: int) -> None:
        async with self._lock:
            uploads = await asyncio.to_thread(self.store.state.get, PHOTO_UPLOADS_KEY, {})
            upload = uploads.get(photo_id)
            if upload is None or index in upload["done"]:
                return
            upload["done"].append(index)
            if len(upload["done"]) >= upload["total"]:
                del uploads[photo_id]
                self.counters.photos_uploaded += 1
                log.info("photo %s uploaded", photo_id)
            await asyncio.to_thread(self.store.state.set, PHOTO_UPLOADS_KEY, uploads)
