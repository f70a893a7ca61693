"""The one writer: a thread that owns the SQLite connection and commits queued work.

Appends that are waiting together are committed in one transaction (group commit), so a burst pays one
fsync. Every other operation runs alone, in order, on the same thread: there is exactly one writer.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import sqlite_utils

from device.store.errors import StoreClosed

log = logging.getLogger(__name__)

MAX_GROUP_EVENTS = 2000  # cap on events per group commit, so one transaction stays short

T = TypeVar("T")


@dataclass
class AppendJob:
    events: list[Any]
    extra: Any = None  # committed in the events' transaction (a journal entry)
    future: Future[list[Any]] = field(default_factory=Future)  # what commit_group stored, one item per event


@dataclass
class CallJob(Generic[T]):
    fn: Callable[[sqlite_utils.Database], T]
    future: Future[T] = field(default_factory=Future)


class _Stop:
    """Queued by close(): the thread ends after the jobs before it."""


_STOP = _Stop()
Job = AppendJob | CallJob[Any] | _Stop


class Writer:
    """Runs `open_fn` on its own thread, then serves jobs until closed.

    `commit_group(db, jobs)` must set each job's future (result or exception).
    """

    def __init__(self, open_fn: Callable[[], sqlite_utils.Database],
                 commit_group: Callable[[sqlite_utils.Database, list[AppendJob]], None], name: str) -> None:
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._commit_group = commit_group
        self._open_fn = open_fn
        self._ready: Future[None] = Future()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.result()  # re-raises an open failure in the caller

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit_append(self, events: list[Any], extra: Any = None) -> Future[list[Any]]:
        job = AppendJob(events, extra)
        self._put(job)
        return job.future

    def submit_call(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        job = CallJob(fn)
        self._put(job)
        return job.future

    def _put(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosed("event store is closed")
            self._queue.put(job)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            db = self._open_fn()
        except BaseException as exc:  # hand the failure to the constructor
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            pending: Job | None = None
            while True:
                job = pending if pending is not None else self._queue.get()
                pending = None
                if isinstance(job, _Stop):
                    break
                if isinstance(job, CallJob):
                    self._run_call(db, job)
                    continue
                group = [job]
                count = len(job.events)
                # Take every append already waiting: they share one transaction and one fsync.
                while count < MAX_GROUP_EVENTS:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not isinstance(nxt, AppendJob):
                        pending = nxt
                        break
                    group.append(nxt)
                    count += len(nxt.events)
                self._commit_group(db, group)
        finally:
            db.close()

    @staticmethod
    def _run_call(db: sqlite_utils.Database, job: CallJob[Any]) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(db))
        except BaseException as exc:
            log.debug("store call failed: %r", exc)
            job.future.set_exception(exc)
