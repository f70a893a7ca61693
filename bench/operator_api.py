"""The operator page's API under a fleet's day: p95 latency of each endpoint the page calls, over real HTTP
(the aiohttp server in this process, an aiohttp client), against a cloud database holding 1,000 vans' day of
events (10 stations, one block of --stops stops per van: arrival, photo check (a retake at one stop in ten),
proof, completion, departure and GPS breadcrumbs at each stop).

The fleet is live: before each round of requests a tenth of the vans send a batch of breadcrumbs (their
`last_batch_at` moves: their map position is re-read) and one van in a hundred finishes a stop (its newest
stop event arrives again: its figures are recomputed from the events); the rest come from the per-device
cache. The baseline ("raw") is the same requests with the cache off: every figure recomputed by
its SQL over the day's events at every request. "cold" is the first request of each endpoint on a fresh
server. Target: p95 <= 200 ms (issue 20).

    python bench/operator_api.py [--vans 1000] [--stops 120] [--fixes 6] [--requests 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_sync.cloud.db import CloudDb  # noqa: E402
from cloud_sync.cloud.web.accounts import Accounts, Role  # noqa: E402
from cloud_sync.cloud.web.cache import MAX_ENTRIES  # noqa: E402
from cloud_sync.cloud.web.server import HttpSettings, OperatorServer  # noqa: E402

DAY = datetime(2026, 11, 25, 7, tzinfo=timezone.utc)
STATIONS = 10
PASSWORD = "bench-password-1"


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def van_events(device: str, block: str, stops: int, fixes: int) -> list[tuple]:
    rows: list[tuple] = []
    seq = 0
    t = DAY

    def add(kind: str, stop: str | None, data: dict, lat: float, lon: float) -> None:
        nonlocal seq, t
        seq += 1
        t += timedelta(seconds=15)
        body = {"id": f"{device}-{seq}", "seq": seq, "type": kind, "ts": iso(t), "mono": seq * 15.0,
                "fix": {"time": iso(t), "mode": 3, "lat": lat, "lon": lon, "eph": 4.0}, "block": block,
                "stop": stop, "data": data}
        rows.append((device, seq, body["id"], kind, orjson.dumps(body).decode(), "0" * 64, "bench", t.timestamp(),
                     "ok"))

    for i in range(stops):
        stop, lat, lon = f"S{i}", 47.5 + i * 0.001, -122.3 + (hash(device) % 100) * 0.001
        for _ in range(fixes):
            add("gps.fix", None, {}, lat, lon)
        add("stop.arrived", stop, {"in_order": True, "packages": [f"{device}-{i}"]}, lat, lon)
        for verdict in (("mismatch", "match") if i % 10 == 0 else ("match",)):
            add("photo.checked", stop, {"verdict": verdict, "read": "12", "expected": "12", "confidence": 0.9,
                                        "photo_id": f"{device}-p{i}-{verdict}", "sha256": "0" * 64,
                                        "packages": [f"{device}-{i}"], "box": [1, 2, 3, 4]}, lat, lon)
        if i % 25 == 7:
            add("delivery.exception", stop, {"reason": "no_access", "packages": [f"{device}-{i}"]}, lat, lon)
            done = {"outcome": "exception", "delivered": 0, "packages": 1, "on_time": None}
        else:
            add("delivery.proof", stop, {"packages": [f"{device}-{i}"], "photo_id": f"{device}-p{i}-match"},
                lat, lon)
            done = {"outcome": "delivered", "delivered": 1, "packages": 1, "on_time": i % 7 != 0}
        add("stop.completed", stop, done, lat, lon)
        add("stop.departed", stop, {"finished": True, "open_packages": []}, lat, lon)
    return rows


def route_doc(block: str, stops: int) -> dict:
    return {"block_id": block, "version": 1, "stops": [
        {"id": f"S{i}", "address": f"{i} Bench St", "house_number": "12", "lat": 47.5 + i * 0.001, "lon": -122.3,
         "packages": [{"id": f"P{i}"}], "window_end": iso(DAY + timedelta(hours=10))} for i in range(stops)]}


def build(path: Path, vans: int, stops: int, fixes: int) -> int:
    CloudDb(path).close()  # the ingest schema, as the cloud makes it
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    total = 0
    for n in range(vans):
        device, block, station = f"van-{n:04d}", f"B-{n:04d}", f"ST{n % STATIONS:02d}"
        rows = van_events(device, block, stops, fixes)
        conn.executemany("INSERT INTO events (device, seq, id, type, body, hash, batch_id, received_at, chain) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        total += len(rows)
        status = {"state": "online" if n % 9 else "offline", "ts": iso(datetime.now(timezone.utc)),
                  "outbox_depth": n % 13, "last_ack_seq": len(rows) - n % 13, "position": None}
        conn.execute("INSERT INTO devices (device, verified_seq, verified_hash, last_batch_at, status) "
                     "VALUES (?, ?, ?, ?, ?)", (device, len(rows), "0" * 64, time.time(), json.dumps(status)))
        conn.execute("INSERT INTO blocks (id, station, body, route, route_version, winner, granted_at) "
                     "VALUES (?, ?, ?, ?, 1, ?, ?)",
                     (block, station, json.dumps({"id": block, "station": station, "starts_at": iso(DAY),
                                                  "ends_at": iso(DAY + timedelta(hours=10))}),
                      json.dumps(route_doc(block, stops)), device, time.time()))
        if n % 50 == 49:
            conn.commit()
    conn.commit()
    conn.close()
    return total


async def measure(base: str, requests: int, vans: int, db: Path) -> tuple[dict[str, list[float]], dict[str, float]]:
    paths = {
        "fleet (all stations)": ("olga", "api/fleet"),
        "fleet (one station)": ("mark", "api/fleet"),
        "van": ("olga", "api/vans/van-0007"),
        "stop proof": ("olga", "api/vans/van-0007/stops/S10"),
        "analytics (all stations)": ("olga", "api/analytics?day=2026-11-25"),
        "analytics (one station)": ("mark", "api/analytics?day=2026-11-25"),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    cold: dict[str, float] = {}
    sessions = {}
    for name in ("olga", "mark"):
        s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        r = await s.post(base + "api/login", json={"name": name, "password": PASSWORD})
        assert r.status == 200
        sessions[name] = s
    writer = sqlite3.connect(str(db), timeout=30)
    try:
        for i in range(requests + 1):
            if i:  # since the last round: breadcrumbs from a tenth of the fleet, a finished stop from 1 %
                writer.executemany("UPDATE devices SET last_batch_at = last_batch_at + 1 WHERE device = ?",
                                   [(f"van-{(i * 7919 + k * 10) % vans:04d}",) for k in range(vans // 10)])
                writer.executemany("UPDATE events SET received_at = ? WHERE device = ? AND seq = (SELECT MAX(seq) "
                                   "FROM events WHERE device = ? AND type = 'stop.completed')",
                                   [(time.time(), d, d) for d in (f"van-{(i * 104729 + k * 100) % vans:04d}"
                                                                  for k in range(max(1, vans // 100)))])
                writer.commit()
            for name, (who, path) in paths.items():
                t0 = time.perf_counter()
                async with sessions[who].get(base + path.replace("van-0007", f"van-{(i * 37) % vans:04d}")) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                elapsed = (time.perf_counter() - t0) * 1000
                if i == 0:
                    cold[name] = elapsed
                else:
                    times[name].append(elapsed)
    finally:
        writer.close()
        for s in sessions.values():
            await s.close()
    return times, cold


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


async def serve_and_measure(db: Path, accounts: Path, requests: int, vans: int, cache_entries: int
                            ) -> tuple[dict[str, list[float]], dict[str, float]]:
    server = OperatorServer(HttpSettings("127.0.0.1", 0, db, accounts, cache_entries=cache_entries))
    await server.start()
    try:
        return await measure(server.url, requests, vans, db)
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vans", type=int, default=1000)
    parser.add_argument("--stops", type=int, default=120)
    parser.add_argument("--fixes", type=int, default=6, help="GPS breadcrumbs per stop")
    parser.add_argument("--requests", type=int, default=20, help="requests per endpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db, accounts_path = Path(tmp) / "cloud.db", Path(tmp) / "ops.sqlite"
        t0 = time.perf_counter()
        events = build(db, args.vans, args.stops, args.fixes)
        built_s = time.perf_counter() - t0
        accounts = Accounts(accounts_path)
        accounts.add("olga", PASSWORD, Role.OPERATOR)
        accounts.add("mark", PASSWORD, Role.MANAGER, "ST03")
        accounts.close()
        cached, cold = asyncio.run(serve_and_measure(db, accounts_path, args.requests, args.vans, MAX_ENTRIES))
        raw, _ = asyncio.run(serve_and_measure(db, accounts_path, max(3, args.requests // 4), args.vans, 0))
        size_mb = db.stat().st_size / 1e6
    for name, values in cached.items():
        print(json.dumps({"bench": "operator_api", "endpoint": name, "p95_ms": round(p95(values), 1),
                          "p50_ms": round(statistics.median(values), 1), "raw_p95_ms": round(p95(raw[name]), 1),
                          "ratio": round(p95(raw[name]) / p95(values), 1), "cold_ms": round(cold[name], 1),
                          "vans": args.vans, "events": events, "db_mb": round(size_mb),
                          "build_s": round(built_s, 1)}))
    every = [v for values in cached.values() for v in values]
    print(json.dumps({"bench": "operator_api", "endpoint": "all", "p95_ms": round(p95(every), 1),
                      "raw_p95_ms": round(p95([v for vs in raw.values() for v in vs]), 1),
                      "target_p95_ms": 200, "vans": args.vans, "events": events}))


if __name__ == "__main__":
    main()
