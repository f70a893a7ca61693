"""Proof photos to the cloud in resumable chunks, from the store's photo index (device/store/photo_index.py).

The index is the upload queue: a photo is in it once the event that records it is committed, and offered here
once the cloud acknowledged that event (events first). Each chunk's ack is recorded in the store, so after an
outage, a broker restart or a kill -9 the upload resumes at the first chunk not yet acknowledged. Chunks are
read from the file each time (nothing big is held in memory). The uplink sends a chunk only while no event is
waiting, and hands the chunk acks back here.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cloud_sync.errors import SyncError
from cloud_sync.messages import PHOTO_CHUNK_BYTES, PhotoChunk
from cloud_sync.sync_settings import SyncCounters
from cloud_sync.topics import DeviceTopics
from device.contract.domain import new_event_id
from device.store import EventStore

log = logging.getLogger(__name__)

QUEUE_LOOKAHEAD = 8  # photos looked at per pick (the oldest first)


@dataclass(frozen=True)
class PhotoGone:
    """A queued photo whose file is missing or shorter than recorded: it leaves the queue (counted, logged)."""

    photo_id: str
    problem: str


def chunk_count(size: int) -> int:
    return max(1, -(-size // PHOTO_CHUNK_BYTES))


class PhotoUploads:
    def __init__(self, store: EventStore, topics: DeviceTopics, counters: SyncCounters,
                 kick: Callable[[], None]) -> None:
        self.store = store
        self.topics = topics
        self.counters = counters
        self._kick = kick

    async def add(self, photo_id: str, path: Path | str) -> None:
        """Queue a file as a proof photo (the agent queues its photos through the photo index when their event
        commits; this is for a photo recorded by other means)."""
        self.topics.photo(photo_id)  # a valid topic level, or ValueError

        def record() -> None:
            data = Path(path).read_bytes()
            if not data:
                raise SyncError(f"photo {path} is empty")
            self.store.state.record_photo(photo_id, str(path), hashlib.sha256(data).hexdigest(), size=len(data))
            self.store.state.queue_photo(photo_id, None)
        try:
            await asyncio.to_thread(record)
        except OSError as exc:
            raise SyncError(f"cannot read photo {path}: {exc}") from exc
        self._kick()

    async def pending(self) -> list[str]:
        return [u.photo_id for u in await asyncio.to_thread(self.store.state.photo_uploads, 1_000_000)]

    async def next_chunk(self, busy: set[tuple[str, int]]) -> PhotoChunk | PhotoGone | None:
        """The first chunk of the oldest queued photo neither acknowledged nor in flight (`busy`: (photo id,
        chunk index)); a PhotoGone (counted) for a photo whose file is gone; None when there is nothing to send."""
        chunk = await asyncio.to_thread(self._next_chunk, busy)
        if isinstance(chunk, PhotoGone):
            self.counters.photos_failed += 1
            log.error("photo %s dropped from the upload queue: %s", chunk.photo_id, chunk.problem)
        return chunk

    def _next_chunk(self, busy: set[tuple[str, int]]) -> PhotoChunk | PhotoGone | None:
        """Store thread: read the chunk from its file."""
        for upload in self.store.state.photo_uploads(QUEUE_LOOKAHEAD):
            try:
                total = chunk_count(upload.size or os.path.getsize(upload.path))
            except OSError as exc:
                self.store.state.photo_upload_failed(upload.photo_id)
                return PhotoGone(upload.photo_id, str(exc))
            for index in range(total):
                if index in upload.chunks_done or (upload.photo_id, index) in busy:
                    continue
                try:
                    with open(upload.path, "rb") as fh:
                        fh.seek(index * PHOTO_CHUNK_BYTES)
                        data = fh.read(PHOTO_CHUNK_BYTES)
                except OSError as exc:
                    data, problem = b"", str(exc)
                else:
                    problem = "file shorter than when it was recorded"
                if not data:
                    self.store.state.photo_upload_failed(upload.photo_id)
                    return PhotoGone(upload.photo_id, problem)
                return PhotoChunk(new_event_id(), upload.photo_id, index, total, upload.sha256, data)
        return None

    async def acked(self, photo_id: str, index: int, total: int) -> None:
        if await asyncio.to_thread(self.store.state.photo_chunk_acked, photo_id, index, total):
            self.counters.photos_uploaded += 1
            log.info("photo %s uploaded", photo_id)
