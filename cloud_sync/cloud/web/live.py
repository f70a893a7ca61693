"""Live updates: one poller reads the fleet view for each scope that has a listener and hands it to that
scope's server-sent-event streams when it changed. Listeners of the same station share one query."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from cloud_sync.cloud.web import queries
from cloud_sync.cloud.web.cache import VersionedCache
from cloud_sync.cloud.web.readonly import ReadDbError, ReadOnlyDb

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4  # a slow browser skips views; it never holds the poller up


class LiveFeed:
    def __init__(self, db: ReadOnlyDb, interval_s: float, cache: VersionedCache) -> None:
        self.db = db
        self.cache = cache
        self.interval_s = interval_s
        self._listeners: dict[str | None, set[asyncio.Queue[str]]] = {}
        self._last: dict[str | None, str] = {}  # the newest view sent, for a listener that joins
        self._seen: dict[str | None, str] = {}  # the same without its clock, to tell a change
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, station: str | None) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_DEPTH)
        self._listeners.setdefault(station, set()).add(queue)
        if station in self._last:
            queue.put_nowait(self._last[station])
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return queue

    def unsubscribe(self, station: str | None, queue: asyncio.Queue[str]) -> None:
        self._listeners.get(station, set()).discard(queue)
        if not self._listeners.get(station):
            self._listeners.pop(station, None)
            self._last.pop(station, None)
            self._seen.pop(station, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while self._listeners:
            for station in list(self._listeners):
                try:
                    doc: dict[str, Any] = await asyncio.to_thread(queries.fleet, self.db, station, time.time(),
                                                                    self.cache)
                except ReadDbError as exc:
                    log.warning("live fleet view failed: %s", exc)
                    continue
                text = orjson.dumps(doc).decode()
                seen = orjson.dumps({k: v for k, v in doc.items() if k != "now"}).decode()
                if seen == self._seen.get(station):
                    continue
                self._seen[station], self._last[station] = seen, text
                for queue in self._listeners.get(station, ()):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(text)
            await asyncio.sleep(self.interval_s)
