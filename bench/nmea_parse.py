"""Sentences/s through the NMEA fallback (framing + checksum + pynmeagps + epoch merge into `Fix`) vs
pynmeagps' own `NMEAReader` alone over the same bytes, same run. One JSON line with both and the ratio.

Input: every real receiver log in tests/data/gps, concatenated (`#` header lines removed).
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pynmeagps import NMEAReader  # noqa: E402

from firmware_bridge.gps.nmea_reader import NmeaFixReader  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "tests" / "data"
REPEAT = 3  # passes over the corpus per round
ROUNDS = 3  # best of


def corpus() -> bytes:
    lines = []
    for log in sorted((TESTDATA / "gps" / "gpsd-test-daemon").glob("*.log")):
        lines += [line.rstrip(b"\r\n") + b"\r\n" for line in log.read_bytes().splitlines()
                  if line.startswith(b"$")]
    return b"".join(lines) * REPEAT


def run_ours(data: bytes) -> tuple[float, int, int]:
    reader = NmeaFixReader()
    started = time.perf_counter()
    fixes = sum(1 for _ in reader.read_stream(io.BytesIO(data)))
    elapsed = time.perf_counter() - started
    c = reader.counters
    return elapsed, c.sentences + c.unsupported + c.rejected, fixes


def run_pynmeagps(data: bytes) -> tuple[float, int]:
    reader = NMEAReader(io.BufferedReader(io.BytesIO(data)), quitonerror=0)
    started = time.perf_counter()
    count = sum(1 for _ in reader)
    return time.perf_counter() - started, count


def main() -> None:
    data = corpus()
    ours, base = [], []
    for _ in range(ROUNDS):
        t, sentences, fixes = run_ours(data)
        ours.append((t, sentences, fixes))
        base.append(run_pynmeagps(data))
    t_ours, sentences, fixes = min(ours)
    t_base, base_count = min(base)
    ours_rate = sentences / t_ours
    base_rate = base_count / t_base
    print(json.dumps({
        "bench": "nmea_parse",
        "bytes": len(data),
        "sentences": sentences,
        "fixes": fixes,
        "fallback_sentences_per_s": round(ours_rate),
        "pynmeagps_reader_sentences_per_s": round(base_rate),
        "pynmeagps_sentences": base_count,
        "ratio": round(ours_rate / base_rate, 3),
        # The fallback checks every checksum but decodes only the 8 sentence types a fix needs.
        "note": "fallback decodes RMC/GGA/GSA/VTG/GST/GLL/GNS/ZDA only; pynmeagps decodes every sentence",
    }))


if __name__ == "__main__":
    main()
