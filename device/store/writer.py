"""The one writer: one SQLite connection, used by one thread at a time, that commits queued work.

Appends that are waiting together are committed in one transaction (group commit), so a burst pays one
fsync. Every other operation runs alone, in order, on the same connection: there is exactly one writer.

Work normally runs on the writer's own thread. A caller that blocks until its work is done anyway (`run_append`,
`run_call`) runs it on its own thread when the writer is idle (nothing queued, nothing running): the
hand-off to another thread and back cost several times a commit on fast storage. Order stays first come,
first served: while anything is queued or running, callers queue too. A caller on the event loop never runs a
commit itself (`submit_append_async`): an fsync must not stall the loop.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

import sqlite_utils

from device.store.errors import StoreClosed

log = logging.getLogger(__name__)

MAX_GROUP_EVENTS = 2000  # cap on events per group commit, so one transaction stays short

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Outcome(Protocol[T_contra]):
    """Where a job's result goes: the part of concurrent.futures.Future that the writer uses."""

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: T_contra) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...


class Immediate(Generic[T]):
    """The outcome of work run on the caller's own thread: no locks, nobody else waits for it."""

    __slots__ = ("_value", "_error")

    def __init__(self) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: T) -> None:
        self._value = result

    def set_exception(self, exception: BaseException | None) -> None:
        self._error = exception

    def result(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by the job that ran


class LoopOutcome(Generic[T]):
    """The outcome for a caller on an event loop: the writer thread resolves an asyncio future with one
    call_soon_threadsafe (asyncio.wrap_future of a concurrent Future costs two futures, their locks and
    callbacks each way)."""

    __slots__ = ("_loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[T] = loop.create_future()

    def set_running_or_notify_cancel(self) -> bool:
        return not self.future.cancelled()  # a caller that gave up before the commit: its events are dropped

    def set_result(self, result: T) -> None:
        self._hand_back(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._hand_back(None, exception)

    def _hand_back(self, result: T | None, error: BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(_resolve, self.future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits any more (the commit stands)
            log.debug("store result for a closed event loop dropped")


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by its awaiter while the commit ran: the events are stored all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class AppendJob:
    __slots__ = ("events", "extra", "future")

    def __init__(self, events: list[Any], extra: Any, future: Outcome[Sequence[Any]]) -> None:
        self.events = events
        self.extra = extra  # committed in the events' transaction (a journal entry)
        self.future = future  # what commit_group stored, one item per event


class CallJob(Generic[T]):
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite_utils.Database], T], future: Outcome[T]) -> None:
        self.fn = fn
        self.future = future


class _Stop:
    """Queued by close(): the thread ends after the jobs before it."""


_STOP = _Stop()
Job = AppendJob | CallJob[Any] | _Stop


class Writer:
    """Opens the database with `open_fn` on its own thread, then serves jobs until closed.

    `commit_group(db, jobs)` must set each job's future (result or exception).
    """

    def __init__(self, open_fn: Callable[[], sqlite_utils.Database],
                 commit_group: Callable[[sqlite_utils.Database, list[AppendJob]], None], name: str) -> None:
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._commit_group = commit_group
        self._open_fn = open_fn
        self._ready: Future[None] = Future()
        self._closed = False
        self._lock = threading.Lock()  # guards _closed, _outstanding and the claim of _db_lock
        self._db_lock = threading.Lock()  # held by whoever uses the connection
        self._outstanding = 0  # jobs queued and not finished
        self._db: sqlite_utils.Database | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.result()  # re-raises an open failure in the caller

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    # ---- queued work --------------------------------------------------------------------------------
    def submit_append(self, events: list[Any], extra: Any = None) -> Future[Sequence[Any]]:
        future: Future[Sequence[Any]] = Future()
        self._put(AppendJob(events, extra, future))
        return future

    def submit_append_async(self, events: list[Any], extra: Any = None) -> asyncio.Future[Sequence[Any]]:
        """Queue an append for the writer thread; the returned future resolves on the running loop."""
        outcome: LoopOutcome[Sequence[Any]] = LoopOutcome(asyncio.get_running_loop())
        self._put(AppendJob(events, extra, outcome))
        return outcome.future

    def submit_call(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        future: Future[T] = Future()
        self._put(CallJob(fn, future))
        return future

    def _put(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosed("event store is closed")
            self._outstanding += 1
            self._queue.put(job)

    # ---- work the caller waits for ------------------------------------------------------------------
    def run_append(self, events: list[Any], extra: Any = None) -> Sequence[Any]:
        """Append and wait for the commit: on this thread when the writer is idle, else queued."""
        db = self._claim_idle()
        if db is None:
            return self.submit_append(events, extra).result()
        outcome: Immediate[Sequence[Any]] = Immediate()
        try:
            self._commit_group(db, [AppendJob(events, extra, outcome)])
        finally:
            self._db_lock.release()
        return outcome.result()

    def run_call(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run `fn` on the connection and wait: on this thread when the writer is idle, else queued."""
        db = self._claim_idle()
        if db is None:
            return self.submit_call(fn).result()
        try:
            return fn(db)
        finally:
            self._db_lock.release()

    def _claim_idle(self) -> sqlite_utils.Database | None:
        """The connection, with _db_lock held, when nothing is queued or running; else None."""
        with self._lock:
            if self._closed:
                raise StoreClosed("event store is closed")
            if self._outstanding or self._db is None or not self._db_lock.acquire(blocking=False):
                return None
            return self._db

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    # ---- the writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            db = self._open_fn()
        except BaseException as exc:  # hand the failure to the constructor
            self._ready.set_exception(exc)
            return
        self._db = db
        self._ready.set_result(None)
        try:
            pending: Job | None = None
            while True:
                job = pending if pending is not None else self._queue.get()
                pending = None
                if isinstance(job, _Stop):
                    break
                with self._db_lock:
                    if isinstance(job, CallJob):
                        taken = 1
                        self._run_call(db, job)
                    else:
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
                        taken = len(group)
                        self._commit_group(db, group)
                with self._lock:
                    self._outstanding -= taken
        finally:
            with self._db_lock:
                self._db = None
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
