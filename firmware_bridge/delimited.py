"""Splitting a byte stream at delimiters with a hard cap on the buffered bytes (no I/O).

A port that streams bytes without a terminator must not grow memory: once the buffer exceeds `max_len`
it is discarded and everything up to the next delimiter is dropped too (the tail of an over-long chunk
is not a chunk). Each such event is counted and logged (at `log_level`: a scanner line that long is news, binary
noise on a GPS port is not).
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class BoundedSplitter:
    def __init__(self, delimiters: bytes, max_len: int, *, log_level: int = logging.WARNING) -> None:
        if not delimiters:
            raise ValueError("at least one delimiter byte is needed")
        self._delimiter = delimiters[:1]
        # Every other delimiter is mapped onto the first, so one bytes.split handles CR, LF and CRLF.
        self._others = delimiters[1:]
        self.max_len = max_len
        self.log_level = log_level
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long chunk: drop until the next delimiter
        self.oversize_chunks = 0
        self.discarded_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        """Forget a partial chunk (the port was closed: its tail will never come)."""
        self.discarded_bytes += len(self._buffer)
        self._buffer.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete chunks in `data` (delimiters removed, empty chunks included)."""
        for other in self._others:
            data = data.replace(bytes([other]), self._delimiter)
        parts = data.split(self._delimiter)
        if not self._buffer and not self._skipping and max(map(len, parts)) <= self.max_len:
            # The usual read: whole chunks and perhaps the start of the next, none too long.
            self._buffer += parts.pop()
            return parts
        chunks: list[bytes] = []
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if self._skipping:
                self.discarded_bytes += len(part)
                if not last:
                    self._skipping = False
                continue
            if len(self._buffer) + len(part) > self.max_len:
                self.discarded_bytes += len(self._buffer) + len(part)
                self._buffer.clear()
                self.oversize_chunks += 1
                log.log(self.log_level, "discarded a chunk longer than %d bytes (no delimiter)", self.max_len)
                self._skipping = last
                continue
            self._buffer += part
            if not last:
                chunks.append(bytes(self._buffer))
                self._buffer.clear()
        return chunks
