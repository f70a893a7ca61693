"""Line faults a simulator injects into a serial link: corrupt bytes, lost, duplicated or delayed frames.

Faults apply per frame (a chunk ending in `delimiter`) in both directions; a seeded RNG makes a run
repeatable. `silent` drops everything, like a firmware that hangs.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Callable

from firmware_bridge.delimited import BoundedSplitter


@dataclass(frozen=True)
class LineFaults:
    corrupt_byte: float = 0.0  # chance each byte is replaced by another value
    drop_frame: float = 0.0  # chance a frame is lost
    duplicate_frame: float = 0.0  # chance a frame arrives twice
    delay_s: float = 0.0  # latency added to every frame this side sends
    seed: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.corrupt_byte or self.drop_frame or self.duplicate_frame or self.delay_s)


@dataclass
class FaultCounts:
    corrupted_bytes: int = 0
    dropped_frames: int = 0
    duplicated_frames: int = 0


class FaultInjector:
    """Applies LineFaults to one direction of a framed byte stream."""

    def __init__(self, faults: LineFaults, delimiter: bytes, rng: random.Random, counts: FaultCounts,
                 max_frame: int = 4096) -> None:
        self.faults = faults
        self._delimiter = delimiter
        self._rng = rng
        self.counts = counts
        self._frames = BoundedSplitter(delimiter, max_frame)

    def _corrupt(self, frame: bytes) -> bytes:
        if not self.faults.corrupt_byte:
            return frame
        out = bytearray(frame)
        for i in range(len(out)):
            if self._rng.random() < self.faults.corrupt_byte:
                out[i] ^= self._rng.randrange(1, 256)
                self.counts.corrupted_bytes += 1
        return bytes(out)

    def apply(self, data: bytes) -> list[bytes]:
        """Bytes in → the chunks to pass on (each a whole frame with its delimiter, possibly damaged)."""
        out: list[bytes] = []
        for frame in self._frames.feed(data):
            if self._rng.random() < self.faults.drop_frame:
                self.counts.dropped_frames += 1
                continue
            wire = self._corrupt(frame + self._delimiter)
            out.append(wire)
            if self._rng.random() < self.faults.duplicate_frame:
                self.counts.duplicated_frames += 1
                out.append(wire)
        return out


class FaultyLine(asyncio.Protocol):
    """Sits between a SimPort and the simulator's protocol and damages traffic both ways."""

    def __init__(self, inner: asyncio.Protocol, faults: LineFaults, delimiter: bytes,
                 write: Callable[[bytes], None]) -> None:
        rng = random.Random(faults.seed)
        self.counts = FaultCounts()
        self.silent = False
        self._inner = inner
        self._write = write
        self._delay_s = faults.delay_s
        self._faulty = faults.any
        self._rx = FaultInjector(faults, delimiter, rng, self.counts)
        self._tx = FaultInjector(faults, delimiter, rng, self.counts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # the pty's read side; the simulator's protocol is connected to a LineTransport instead

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self.silent:
            return
        if not self._faulty:  # a clean line passes bytes on as they came
            self._inner.data_received(data)
            return
        for chunk in self._rx.apply(data):
            self._inner.data_received(chunk)

    def send(self, data: bytes) -> None:
        if self.silent:
            return
        if not self._faulty:
            self._write(data)
            return
        chunks = self._tx.apply(data)
        if self._delay_s:
            for chunk in chunks:
                asyncio.get_running_loop().call_later(self._delay_s, self._write, chunk)
        elif chunks:
            self._write(b"".join(chunks))  # what survived of one write goes out as one write


class LineTransport(asyncio.Transport):
    """What the simulator's protocol writes to: everything goes through the FaultyLine."""

    def __init__(self, line: FaultyLine) -> None:
        super().__init__()
        self._line = line
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._line.send(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
