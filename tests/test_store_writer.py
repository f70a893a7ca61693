"""The store's one writer: which thread commits, in what order, and what a cancelled append leaves behind."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import sqlite_utils

from device.contract.domain import Event, EventType
from device.store import EventStore
from device.store.database import open_database
from device.store.writer import AppendJob, Writer

WAIT_S = 30.0  # a bound that only catches a hang


class Recorder:
    """A commit_group that records, per job, its events and the thread that committed them."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[Any], int]] = []

    def __call__(self, db: sqlite_utils.Database, jobs: list[AppendJob]) -> None:
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                self.commits.append((job.events, threading.get_ident()))
                job.future.set_result(job.events)


def writer(tmp_path: Path, recorder: Recorder) -> Writer:
    return Writer(lambda: open_database(tmp_path / "w.db")[0], recorder, name="test-writer")


def block(w: Writer) -> threading.Event:
    """Queue a call that holds the writer thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold(db: sqlite_utils.Database) -> None:
        started.set()
        release.wait(WAIT_S)

    w.submit_call(hold)
    assert started.wait(WAIT_S)
    return release


def wait_until(condition: Any) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S * 1000)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition not reached")


def test_a_waiting_caller_commits_on_its_own_thread_when_the_writer_is_idle(tmp_path: Path) -> None:
    recorder = Recorder()
    w = writer(tmp_path, recorder)
    try:
        assert w.run_append(["a"]) == ["a"]
        assert w.run_call(lambda db: threading.get_ident()) == threading.get_ident()
    finally:
        w.close()
    assert recorder.commits == [(["a"], threading.get_ident())]


def test_appends_from_the_loop_commit_on_the_writer_thread(tmp_path: Path) -> None:
    recorder = Recorder()
    w = writer(tmp_path, recorder)

    async def append() -> list[Any]:
        return await w.submit_append_async(["a"])

    try:
        assert asyncio.run(append()) == ["a"]
    finally:
        w.close()
    [(events, thread)] = recorder.commits
    assert thread != threading.get_ident()  # an fsync never stalls the event loop


def test_while_work_is_queued_a_waiting_caller_queues_behind_it(tmp_path: Path) -> None:
    recorder = Recorder()
    w = writer(tmp_path, recorder)
    try:
        release = block(w)
        first = w.submit_append(["first"])
        caller = threading.Thread(target=w.run_append, args=(["second"],))
        caller.start()
        wait_until(lambda: w._outstanding == 3)  # the hold, "first" and "second" are queued
        release.set()
        caller.join(WAIT_S)
        assert first.result(WAIT_S) == ["first"]
    finally:
        w.close()
    assert [events for events, _ in recorder.commits] == [["first"], ["second"]]


def test_an_async_append_cancelled_before_its_commit_is_not_stored(tmp_path: Path) -> None:
    event = Event(EventType.PACKAGE_SCANNED, {"package": "TBA000001"})
    with EventStore(tmp_path / "events.db") as store:
        async def cancel_then_append() -> None:
            release = block(store._writer)
            task = asyncio.ensure_future(store.append_async([event]))
            await asyncio.sleep(0)  # the task submits its job and waits
            task.cancel()
            release.set()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()
            await store.append_async([Event(EventType.PACKAGE_SCANNED, {"package": "TBA000002"})])

        asyncio.run(cancel_then_append())
        assert not store.has_event(event.id)
        assert store.stats().last_seq == 1
        assert store.verify_chain().ok
