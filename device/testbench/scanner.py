"""A simulated serial barcode scanner on a pty: scripted scans, double reads, noise lines, unplug.

Writes one line per scan (`]E0590...` + CR LF by default, like a USB-CDC handheld in AIM mode).
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from device.testbench.codes import Barcode, noise_line
from device.testbench.port import SimPort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScannerBehaviour:
    aim: bool = True  # send the AIM symbology identifier
    terminator: bytes = b"\r\n"  # CR, LF or CRLF
    interval_s: float = 0.0  # pause between scans
    double_read: float = 0.0  # chance a code is sent twice in a row (within the agent's window)
    noise: float = 0.0  # chance a garbage line precedes a scan
    seed: int | None = None


@dataclass
class ScannerCounts:
    scans: int = 0
    double_reads: int = 0
    noise_lines: int = 0


class SimScanner:
    def __init__(self, link_path: str | None = None, behaviour: ScannerBehaviour | None = None) -> None:
        self.behaviour = behaviour = behaviour or ScannerBehaviour()
        self.port = SimPort(asyncio.Protocol(), link_path)  # what the agent writes (scanner config) is ignored
        self.counts = ScannerCounts()
        self._rng = random.Random(behaviour.seed)

    @property
    def path(self) -> str:
        return self.port.path

    async def start(self) -> str:
        return await self.port.plug()

    async def stop(self) -> None:
        await self.port.close()

    async def __aenter__(self) -> SimScanner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_line(self, line: bytes) -> None:
        self.port.write(line + self.behaviour.terminator)

    def write_raw(self, data: bytes) -> None:
        self.port.write(data)

    def scan(self, code: Barcode) -> None:
        """One trigger pull: maybe a noise line first, the code, maybe the same code again."""
        if self._rng.random() < self.behaviour.noise:
            self.counts.noise_lines += 1
            self.write_line(noise_line(self._rng))
        line = code.line(self.behaviour.aim).encode("utf-8")
        self.write_line(line)
        self.counts.scans += 1
        if self._rng.random() < self.behaviour.double_read:
            self.counts.double_reads += 1
            self.write_line(line)

    async def run_script(self, codes: list[Barcode]) -> None:
        for code in codes:
            self.scan(code)
            # Yield even without an interval, so the pty buffer drains into the agent as on a real line.
            await asyncio.sleep(self.behaviour.interval_s)

    async def unplug(self) -> None:
        await self.port.unplug()

    async def replug(self) -> str:
        return await self.port.plug()
