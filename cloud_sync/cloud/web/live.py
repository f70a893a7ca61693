"""Live updates: one poller reads a view for each key that has a listener (the fleet view of a station, a
van's commands) and hands it to that key's server-sent-event streams when it changed. Listeners of the same
key share one query."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Generic, Hashable, TypeVar

import orjson
from aiohttp import web

from cloud_sync.cloud.web import queries
from cloud_sync.cloud.web.cache import VersionedCache
from cloud_sync.cloud.web.readonly import ReadDbError, ReadOnlyDb

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4  # a slow browser skips views; it never holds the poller up
K = TypeVar("K", bound=Hashable)


class LiveViews(Generic[K]):
    """`view(key)` (run in a worker thread) every `interval_s` for each key with a listener; a view's `now`
    field does not count as a change."""

    def __init__(self, view: Callable[[K], dict[str, Any]], interval_s: float) -> None:
        self.view = view
        self.interval_s = interval_s
        self._listeners: dict[K, set[asyncio.Queue[str]]] = {}
        self._last: dict[K, str] = {}  # the newest view sent, for a listener that joins
        self._seen: dict[K, str] = {}  # the same without its clock, to tell a change
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, key: K) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_DEPTH)
        self._listeners.setdefault(key, set()).add(queue)
        if key in self._last:
            queue.put_nowait(self._last[key])
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return queue

    def unsubscribe(self, key: K, queue: asyncio.Queue[str]) -> None:
        self._listeners.get(key, set()).discard(queue)
        if not self._listeners.get(key):
            self._listeners.pop(key, None)
            self._last.pop(key, None)
            self._seen.pop(key, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while self._listeners:
            for key in list(self._listeners):
                try:
                    doc = await asyncio.to_thread(self.view, key)
                except ReadDbError as exc:
                    log.warning("live view %r failed: %s", key, exc)
                    continue
                text = orjson.dumps(doc).decode()
                seen = orjson.dumps({k: v for k, v in doc.items() if k != "now"}).decode()
                if seen == self._seen.get(key):
                    continue
                self._seen[key], self._last[key] = seen, text
                for queue in self._listeners.get(key, ()):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(text)
            await asyncio.sleep(self.interval_s)


class LiveFeed(LiveViews[str | None]):
    """The fleet view of each station (None: the whole fleet) with a listener."""

    def __init__(self, db: ReadOnlyDb, interval_s: float, cache: VersionedCache) -> None:
        super().__init__(lambda station: queries.fleet(db, station, time.time(), cache), interval_s)


async def stream(request: web.Request, views: LiveViews[K], key: K, event: str,
                 headers: dict[str, str]) -> web.StreamResponse:
    """Server-sent events: `event` with the key's whole view whenever it changed, until the browser goes."""
    queue = views.subscribe(key)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                           **headers})
    await response.prepare(request)
    try:
        while True:
            text = await queue.get()
            await response.write(f"event: {event}\ndata: {text}\n\n".encode())
    except ConnectionResetError:
        pass
    finally:
        views.unsubscribe(key, queue)
    return response
