"""Events/s through the event store vs a raw sqlite3 executemany loop with the same PRAGMAs, same run.

Prints one JSON line per burst size (1, 10, 100) with both rates, the ratio, the CPU per event of each side and
p50/p99 append latency. The two sides alternate in short chunks of commits (each chunk's first side alternating
too), so a disk shared with other work slows both alike; each side's rate is its events over the time its own
chunks took.

Profile "disk" runs in the working directory: issue 22's check (ratio >= 0.85 at every burst size) applies to
these lines, which carry "check": "ratio >= 0.85". Profile "tmpfs" runs the same in /dev/shm, where an fsync costs
nothing, so the store's own CPU (serialization, hashing, the writer hand-off) is all the difference; its lines
carry "check": null and show what is left of that overhead.
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.contract.chain import GENESIS_HASH, canonical_bytes, hash_body  # noqa: E402
from device.contract.domain import Event, EventType  # noqa: E402
from device.store import EventStore  # noqa: E402
from device.store.database import PRAGMAS, open_database  # noqa: E402
from device.store.outbox import INSERT_EVENT  # noqa: E402

TOTAL = {1: 3000, 10: 20000, 100: 60000}  # events per burst size: enough commits to be stable
CHUNK_COMMITS = 50  # commits per side before the other side's turn
TMPFS = Path("/dev/shm")
CHECK = {"disk": "ratio >= 0.85", "tmpfs": None}  # which lines issue 22's check applies to


def make_events(n: int) -> list[Event]:
    return [Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:09d}", "result": "ok", "bay": "C4"})
            for i in range(n)]


def raw_rows(events: list[Event]) -> list[tuple]:
    """The baseline's rows, prepared before any clock starts: bodies serialized, hashes computed."""
    rows = []
    prev = GENESIS_HASH
    for seq, event in enumerate(events, start=1):
        doc = {**event.to_dict(), "seq": seq}
        body = canonical_bytes(doc)
        prev = hash_body(prev, body)
        rows.append((seq, event.id, event.type.value, int(event.lane), event.ts, event.mono, None, None,
                     body.decode(), prev, time.time()))
    return rows


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to a file with the store's schema and indexes, and the store's PRAGMAs."""
    db, _ = open_database(path)
    db.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def raw_chunk(conn: sqlite3.Connection, rows: list[tuple], burst: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(rows), burst):
        conn.execute("BEGIN")
        conn.executemany(INSERT_EVENT, rows[i:i + burst])
        conn.execute("COMMIT")
    return time.perf_counter() - started


def store_chunk(store: EventStore, events: list[Event], burst: int, latencies: list[float]) -> float:
    started = time.perf_counter()
    for i in range(0, len(events), burst):
        t0 = time.perf_counter()
        store.append_many(events[i:i + burst])
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started


def bench(workdir: Path, burst: int, total: int, profile: str) -> dict:
    events = make_events(total)
    rows = raw_rows(make_events(total))
    chunk = burst * CHUNK_COMMITS
    raw_s = store_s = raw_cpu = store_cpu = 0.0
    latencies: list[float] = []
    conn = raw_connection(workdir / f"raw-{burst}.db")

    def run_raw(i: int) -> None:
        nonlocal raw_s, raw_cpu
        cpu = time.process_time()
        raw_s += raw_chunk(conn, rows[i:i + chunk], burst)
        raw_cpu += time.process_time() - cpu

    def run_store(i: int) -> None:
        nonlocal store_s, store_cpu
        cpu = time.process_time()
        store_s += store_chunk(store, events[i:i + chunk], burst, latencies)
        store_cpu += time.process_time() - cpu

    with EventStore(workdir / f"store-{burst}.db") as store:
        for n, i in enumerate(range(0, total, chunk)):
            for side in ((run_store, run_raw) if n % 2 else (run_raw, run_store)):
                side(i)
    conn.close()
    return {"bench": "store_ingest", "profile": profile, "check": CHECK[profile], "burst": burst, "events": total,
            "events_per_s": round(total / store_s), "raw_events_per_s": round(total / raw_s),
            "ratio": round(raw_s / store_s, 3),
            # process CPU (every thread) per event: steadier than wall time on a machine shared with other work
            "cpu_us_per_event": round(store_cpu / total * 1e6, 2),
            "raw_cpu_us_per_event": round(raw_cpu / total * 1e6, 2),
            "append_p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "append_p99_ms": round(percentile(latencies, 99) * 1000, 3)}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    places = [("disk", Path.cwd())] + ([("tmpfs", TMPFS)] if TMPFS.is_dir() else [])
    for profile, where in places:
        with tempfile.TemporaryDirectory(prefix="flexedge-bench-", dir=where) as tmp:
            for burst, total in TOTAL.items():
                print(json.dumps(bench(Path(tmp), burst, total, profile)), flush=True)


if __name__ == "__main__":
    main()
