"""Scanner lines from a serial port to typed `Scan`s: bounded line buffer, rejections, double-read filter.

`ScannerProtocol` is an asyncio protocol (one per connection; a partial line is dropped when the port
goes). `ScannerReader` keeps the port open across unplug/replug and hands out scans through a queue.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from firmware_bridge.delimited import BoundedSplitter
from firmware_bridge.errors import ScanRejected
from firmware_bridge.scanner.parse import Scan, parse_line
from firmware_bridge.transport import PortSettings, ReconnectingPort

log = logging.getLogger(__name__)

LINE_DELIMITERS = b"\r\n"  # CR, LF or CRLF end a line; the empty line between CR and LF is ignored
MAX_LINE_BYTES = 4096  # longer than any 2D code a handheld sends (QR tops out near 3 kB)
DOUBLE_READ_WINDOW_S = 0.8  # the same code again within this time is the scanner reading it twice
DOUBLE_READ_MEMORY = 256  # codes remembered for double-read suppression (bounded)
SCAN_QUEUE_SIZE = 1024  # scans waiting for the consumer; beyond this the oldest are dropped and counted


@dataclass(frozen=True)
class ScannerConfig:
    port: PortSettings
    require_aim: bool = False  # True when the scanner is set to send AIM ids: lines without one are noise
    double_read_window_s: float = DOUBLE_READ_WINDOW_S
    max_line_bytes: int = MAX_LINE_BYTES


@dataclass
class ScannerStats:
    lines: int = 0
    scans: int = 0
    rejected: int = 0
    double_reads: int = 0
    oversize_lines: int = 0
    discarded_bytes: int = 0  # bytes of over-long lines and of partial lines cut by a disconnect
    dropped_scans: int = 0  # the consumer fell behind


class DoubleReadFilter:
    """Suppresses the same (symbology, data) seen again within `window_s`; `now` is injectable for tests."""

    def __init__(self, window_s: float, memory: int = DOUBLE_READ_MEMORY) -> None:
        self.window_s = window_s
        self._memory = memory
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def is_double(self, scan: Scan, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        key = (scan.symbology.value, scan.data)
        last = self._seen.pop(key, None)
        self._seen[key] = now
        while len(self._seen) > self._memory:
            self._seen.popitem(last=False)
        return last is not None and now - last < self.window_s


class ScannerProtocol(asyncio.Protocol):
    """Bytes → lines → scans for one connection; everything rejected is logged and counted."""

    def __init__(self, config: ScannerConfig, stats: ScannerStats, double_reads: DoubleReadFilter,
                 emit: Callable[[Scan], None]) -> None:
        self._config = config
        self._stats = stats
        self._double_reads = double_reads
        self._emit = emit
        self._lines = BoundedSplitter(LINE_DELIMITERS, config.max_line_bytes)

    def data_received(self, data: bytes) -> None:
        oversize, discarded = self._lines.oversize_chunks, self._lines.discarded_bytes
        lines = self._lines.feed(data)
        self._stats.oversize_lines += self._lines.oversize_chunks - oversize
        self._stats.discarded_bytes += self._lines.discarded_bytes - discarded
        for line in lines:
            if line:
                self.line_received(line)

    def line_received(self, line: bytes) -> None:
        self._stats.lines += 1
        try:
            scan = parse_line(line, require_aim=self._config.require_aim)
        except ScanRejected as exc:
            self._stats.rejected += 1
            log.warning("scanner %s: rejected line (%s)", self._config.port.path, exc)
            return
        if self._double_reads.is_double(scan, scan.mono):
            self._stats.double_reads += 1
            log.debug("scanner %s: double read of %s suppressed", self._config.port.path, scan.data)
            return
        self._stats.scans += 1
        self._emit(scan)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lines.buffered:
            log.info("scanner %s: dropped a partial line of %d bytes at disconnect",
                     self._config.port.path, self._lines.buffered)
            self._stats.discarded_bytes += self._lines.buffered
        self._lines.reset()


class ScannerReader:
    """The scanner as the agent sees it: `async for scan in reader` (or `await reader.get()`)."""

    def __init__(self, config: ScannerConfig) -> None:
        self.config = config
        self.stats = ScannerStats()
        self._double_reads = DoubleReadFilter(config.double_read_window_s)
        self._queue: asyncio.Queue[Scan] = asyncio.Queue(SCAN_QUEUE_SIZE)
        self.port = ReconnectingPort(config.port, self._new_protocol)

    def _new_protocol(self) -> ScannerProtocol:
        return ScannerProtocol(self.config, self.stats, self._double_reads, self._put)

    def _put(self, scan: Scan) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.stats.dropped_scans += 1
            log.error("scanner %s: consumer too slow, oldest scan dropped", self.config.port.path)
        self._queue.put_nowait(scan)

    async def get(self) -> Scan:
        return await self._queue.get()

    def __aiter__(self) -> ScannerReader:
        return self

    async def __anext__(self) -> Scan:
        return await self._queue.get()

    def start(self) -> ScannerReader:
        self.port.start()
        return self

    async def close(self) -> None:
        await self.port.close()

    async def __aenter__(self) -> ScannerReader:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
