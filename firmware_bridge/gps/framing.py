"""NMEA 0183 framing: a byte stream in, candidate sentences out. No I/O, no parsing.

Anything that is not a `$...\\n` line is counted as noise and dropped, so a receiver spitting binary or
a half-written line after a reconnect never stops the stream.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from firmware_bridge.delimited import BoundedSplitter

log = logging.getLogger(__name__)

# NMEA 0183 allows 82 characters; high-precision and proprietary sentences run longer in practice.
MAX_SENTENCE_BYTES = 256


@dataclass
class NmeaCounters:
    """What the reader saw, for health reporting. Every rejected input is counted under one reason."""

    sentences: int = 0  # passed checksum and parsed
    epochs: int = 0  # fixes emitted
    noise_bytes: int = 0  # non-blank bytes outside any sentence
    oversize: int = 0  # line longer than MAX_SENTENCE_BYTES (binary noise without LF included)
    bad_checksum: int = 0  # missing or wrong checksum
    malformed: int = 0  # checksum fine, fields unparseable
    unsupported: int = 0  # valid but not a sentence we use (GSV, proprietary, ...)

    @property
    def rejected(self) -> int:
        return self.oversize + self.bad_checksum + self.malformed

    def as_dict(self) -> dict[str, int]:
        out = dict(vars(self))
        out["rejected"] = self.rejected
        return out


class NmeaFramer:
    """Split bytes into sentences (`$` up to LF, CR stripped). Any chunking of the input gives the same output."""

    def __init__(self, counters: NmeaCounters) -> None:
        self.counters = counters
        self._lines = BoundedSplitter(b"\n", MAX_SENTENCE_BYTES, log_level=logging.DEBUG)  # a binary stream is noise

    def feed(self, data: bytes) -> list[bytes]:
        oversize = self._lines.oversize_chunks
        lines = self._lines.feed(data)
        self.counters.oversize += self._lines.oversize_chunks - oversize
        return [sentence for sentence in map(self._sentence, lines) if sentence is not None]

    def _sentence(self, line: bytes) -> bytes | None:
        # The last `$` starts the sentence: bytes before it are noise or a sentence cut off mid-line.
        at = line.rfind(b"$")
        self.counters.noise_bytes += len((line if at < 0 else line[:at]).strip())
        if at < 0:
            return None
        return line[at:].rstrip(b"\r")
