"""Events/s through the event store vs a raw sqlite3 executemany loop with the same PRAGMAs, same run.

Prints one JSON line per burst size (1, 10, 100) with both rates, the ratio and p50/p99 append latency.
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

TOTAL = {1: 1500, 10: 10000, 100: 50000}  # events per burst size: enough commits to be stable
ROUNDS = 3


def make_events(n: int) -> list[Event]:
    return [Event(EventType.PACKAGE_SCANNED, {"package": f"TBA{i:09d}", "result": "ok", "bay": "C4"})
            for i in range(n)]


def bench_store(path: Path, burst: int, total: int) -> tuple[float, list[float]]:
    events = make_events(total)
    latencies = []
    with EventStore(path) as store:
        started = time.perf_counter()
        for i in range(0, total, burst):
            t0 = time.perf_counter()
            store.append_many(events[i:i + burst])
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    return total / elapsed, latencies


def bench_raw(path: Path, burst: int, total: int) -> float:
    """The baseline: the same rows into the same table, prepared before the clock starts (bodies serialized,
    hashes computed), then a bare executemany + COMMIT per burst on a plain sqlite3 connection."""
    db, _ = open_database(path)  # the same schema and indexes as the store
    db.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    rows = []
    prev = GENESIS_HASH
    for seq, event in enumerate(make_events(total), start=1):
        doc = {**event.to_dict(), "seq": seq}
        body = canonical_bytes(doc)
        prev = hash_body(prev, body)
        rows.append((seq, event.id, event.type.value, int(event.lane), event.ts, event.mono, None, None,
                     body.decode(), prev, time.time()))
    started = time.perf_counter()
    for i in range(0, total, burst):
        conn.execute("BEGIN")
        conn.executemany(INSERT_EVENT, rows[i:i + burst])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return total / elapsed


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-", dir=Path.cwd()) as tmp:
        for burst, total in TOTAL.items():
            # Interleaved rounds, best of each: the disk's mood affects both sides alike.
            raws, stores = [], []
            for rnd in range(ROUNDS):
                raws.append(bench_raw(Path(tmp) / f"raw-{burst}-{rnd}.db", burst, total))
                stores.append(bench_store(Path(tmp) / f"store-{burst}-{rnd}.db", burst, total))
            raw = max(raws)
            rate, latencies = max(stores, key=lambda r: r[0])
            print(json.dumps({
                "bench": "store_ingest", "burst": burst, "events": total,
                "events_per_s": round(rate), "raw_events_per_s": round(raw), "ratio": round(rate / raw, 3),
                "append_p50_ms": round(percentile(latencies, 50) * 1000, 3),
                "append_p99_ms": round(percentile(latencies, 99) * 1000, 3),
            }), flush=True)


if __name__ == "__main__":
    main()
