"""`flexedge cloud --workers N` (N > 1): N ingest worker processes beside the dispatching one.

Each worker is `flexedge cloud ... --worker-index I`, a process of its own with one MQTT connection, client
id (= certificate CN) `{prefix}-ingest-{I}`, in the broker's `$share/ingest` group, and nothing but the
database in common with the others. A worker that dies (SIGKILL, OOM) loses nothing: the batches it had not
acked are sent again by their vans after the ack timeout and land on another worker. The supervisor starts
it again under the same client id after a short pause; a worker whose parent is gone sees its stdin close and
stops.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # a worker's start: imports, the database, the broker connection
RESTART_PAUSE_S = 0.5  # before a dead worker is started again; doubled after each start that failed
RESTART_PAUSE_MAX_S = 30.0  # a worker that cannot start (database or broker down) is tried this often
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL


class WorkerStartError(RuntimeError):
    """A worker process did not come up (its exit code and the tail of what it said are in the message)."""


@dataclass
class WorkerProcess:
    index: int
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    pids: list[int] = field(default_factory=list)  # every process this slot has had, oldest first
    drain: asyncio.Task[None] | None = None  # reads its stdout after the ready line


class WorkerPool:
    """`await start()` brings up every worker (each has said it is ready); `supervise()` restarts the dead
    until `stop()`."""

    def __init__(self, argv: list[str], count: int) -> None:
        """`argv`: the worker command line without `--worker-index`."""
        self.argv = argv
        self.workers = [WorkerProcess(i) for i in range(count)]
        self.restarts = 0
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(w) for w in self.workers))

    async def _spawn(self, worker: WorkerProcess) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, "--worker-index", str(worker.index), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        worker.proc, worker.starts = proc, worker.starts + 1
        worker.pids.append(proc.pid)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            line = b""
        try:
            ready = json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if not ready:
            if proc.returncode is None:  # hung in its start: ended here, so the supervisor can try again
                proc.kill()
                await proc.wait()
            raise WorkerStartError(f"cloud worker {worker.index} did not start ({proc.returncode}): "
                                   f"{line[-500:]!r}")
        log.info("cloud worker %d up (pid %d)", worker.index, proc.pid)
        worker.drain = asyncio.create_task(_discard(proc.stdout))  # a full pipe would block the worker

    async def supervise(self) -> None:
        await asyncio.gather(*(self._watch(w) for w in self.workers))

    async def _watch(self, worker: WorkerProcess) -> None:
        pause = RESTART_PAUSE_S
        while not self._stopping:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("cloud worker %d (pid %d) ended with %d: starting it again in %.1f s", worker.index,
                        worker.proc.pid, code, pause)
            await asyncio.sleep(pause)
            try:
                await self._spawn(worker)
                pause = RESTART_PAUSE_S
            except WorkerStartError as exc:
                log.error("%s", exc)
                pause = min(pause * 2, RESTART_PAUSE_MAX_S)

    async def stop(self) -> None:
        self._stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def _discard(stream: asyncio.StreamReader) -> None:
    """Read a worker's stdout past its ready line to the end (it prints nothing more; logs go to stderr)."""
    while await stream.read(65536):
        pass


def worker_argv(options: list[str]) -> list[str]:
    """The command line of a worker process: this interpreter, `flexedge cloud` and the given options."""
    return [sys.executable, "-m", "device.cli", "cloud", *options]


async def exit_when_parent_goes() -> None:
    """In a worker: stdin is a pipe from the supervisor; its end (the supervisor died) ends the worker."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(sys.stdin.fileno(), "rb",
                                                                                            closefd=False))
    while await reader.read(4096):
        pass
    log.warning("cloud worker: the supervising process is gone, stopping")
