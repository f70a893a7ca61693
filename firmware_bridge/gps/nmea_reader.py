"""The direct NMEA fallback: bytes from a serial port (or a log) in, one `Fix` per epoch out.

Layers: `framing` (bytes -> sentences) -> `parse_sentence` (checksum, pynmeagps) -> `epoch` (sentences ->
Fix). Garbage never raises: every rejected sentence is logged at DEBUG and counted in `counters`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import pynmeagps
from pynmeagps import NMEAReader

from firmware_bridge.fix import Fix, FixError
from firmware_bridge.gps.epoch import USED, EpochAssembler
from firmware_bridge.gps.framing import NmeaCounters, NmeaFramer

log = logging.getLogger(__name__)

READ_CHUNK = 4096
_PYNMEAGPS_ERRORS = (pynmeagps.NMEAParseError, pynmeagps.NMEAMessageError, pynmeagps.NMEATypeError,
                     pynmeagps.NMEAStreamError)


def checksum_ok(sentence: bytes) -> bool:
    """`$<content>*HH`: HH is the XOR of the content bytes, in hex (either case)."""
    star = len(sentence) - 3
    if star < 1 or sentence[star:star + 1] != b"*":
        return False
    try:
        content = sentence[1:star].decode("ascii")
        given = sentence[star + 1:].decode("ascii").upper()
    except UnicodeDecodeError:
        return False
    expected: str = pynmeagps.calc_checksum(content)
    return expected == given


def sentence_id(sentence: bytes) -> bytes:
    """`GGA` from `$GNGGA,...`; proprietary `$P...` sentences have no standard id."""
    return b"" if sentence[1:2] == b"P" else sentence[3:6]


class NmeaFixReader:
    """Feed bytes (any chunking), get fixes. One instance per receiver: it keeps the epoch in progress."""

    def __init__(self) -> None:
        self.counters = NmeaCounters()
        self._framer = NmeaFramer(self.counters)
        self._epochs = EpochAssembler()

    def feed(self, data: bytes) -> list[Fix]:
        fixes = []
        for sentence in self._framer.feed(data):
            fix = self.feed_sentence(sentence)
            if fix is not None:
                fixes.append(fix)
        return fixes

    def feed_sentence(self, sentence: bytes) -> Fix | None:
        """One framed sentence (no line ending). Returns a fix when it closes an epoch."""
        msg = self.parse_sentence(sentence)
        if msg is None:
            return None
        try:
            return self._counted(self._epochs.add(msg))
        except (FixError, ValueError, TypeError, AttributeError) as exc:
            # Fields that parse but cannot form a fix (a date out of range, ...): drop this epoch's sentence.
            self.counters.malformed += 1
            log.debug("NMEA sentence unusable (%s): %r", exc, sentence[:80])
            return None

    def flush(self) -> Fix | None:
        """End of input: the last epoch has no successor to close it."""
        return self._counted(self._epochs.flush())

    def parse_sentence(self, sentence: bytes) -> Any | None:
        if not checksum_ok(sentence):
            self.counters.bad_checksum += 1
            log.debug("NMEA checksum rejected: %r", sentence[:80])
            return None
        if sentence_id(sentence).decode("ascii", "replace") not in USED:
            self.counters.unsupported += 1
            return None
        try:
            # Checksum already verified above; VALNONE also lets unknown talkers (IN, BD, QZ) through.
            msg = NMEAReader.parse(sentence, validate=pynmeagps.VALNONE)
        except (*_PYNMEAGPS_ERRORS, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            self.counters.malformed += 1
            log.debug("NMEA sentence malformed (%s): %r", exc, sentence[:80])
            return None
        if msg is None:
            self.counters.malformed += 1
            return None
        self.counters.sentences += 1
        return msg

    def read_stream(self, stream: BinaryIO, chunk: int = READ_CHUNK) -> Iterator[Fix]:
        """Any `read(n)` stream: a serial port, a pty, a socket file, a recorded file. Ends at EOF."""
        while True:
            data = stream.read(chunk)
            if not data:
                break
            yield from self.feed(data)
        last = self.flush()
        if last is not None:
            yield last

    def _counted(self, fix: Fix | None) -> Fix | None:
        if fix is not None:
            self.counters.epochs += 1
        return fix


def read_log(path: Path | str, reader: NmeaFixReader | None = None) -> Iterator[Fix]:
    """A recorded NMEA log (gpsd's test format: `#` comment lines allowed) as fixes."""
    reader = reader or NmeaFixReader()
    with open(path, "rb") as stream:
        for line in stream:
            if line.startswith(b"#"):
                continue
            yield from reader.feed(line)
    last = reader.flush()
    if last is not None:
        yield last
