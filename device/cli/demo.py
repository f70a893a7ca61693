"""`flexedge demo`: the agent's pieces that exist, end to end on simulated input.

A simulated van loads and drives a small route: a GPS source at 10 Hz and the scanner/workflow write
concurrently into the real event store (group commit), then the outbox is summarised and its hash chain
verified. Later issues extend this to the full system (broker, cloud, simulators).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from device.cli.common import Context, load_context
from device.domain import Event, EventType, Package, Route, Stop
from device.store import EventStore
from firmware_bridge.fix import Fix, FixMode

STATION = (47.6101, -122.3421)


def demo_route(rng: random.Random, stops: int) -> Route:
    made = []
    for i in range(stops):
        lat = STATION[0] + 0.004 * (i + 1) + rng.uniform(-0.001, 0.001)
        lon = STATION[1] + 0.003 * math.sin(i) + rng.uniform(-0.001, 0.001)
        packages = tuple(Package(id=f"TBA{rng.randrange(10**11, 10**12)}") for _ in range(rng.randint(1, 3)))
        made.append(Stop(id=f"S{i + 1:02d}", address=f"{100 + 7 * i} Pine St", house_number=str(100 + 7 * i),
                         lat=lat, lon=lon, packages=packages))
    return Route(block_id="B-DEMO-1", version=1, stops=tuple(made))


def drive(store: EventStore, route: Route, stop_flag: threading.Event, counter: list[int]) -> None:
    """GPS at 10 Hz along the route, in bursts of 10 (a receiver's epoch backlog)."""
    points = [STATION] + [(s.lat, s.lon) for s in route.stops]
    t = 0
    while not stop_flag.is_set():
        burst = []
        for _ in range(10):
            leg = (t // 50) % (len(points) - 1)
            frac = (t % 50) / 50
            (a_lat, a_lon), (b_lat, b_lon) = points[leg], points[leg + 1]
            fix = Fix(time=datetime.now(timezone.utc), lat=a_lat + (b_lat - a_lat) * frac,
                      lon=a_lon + (b_lon - a_lon) * frac, mode=FixMode.FIX_3D, speed=8.0, eph=4.0)
            burst.append(Event(EventType.GPS_FIX, fix=fix, block=route.block_id))
            t += 1
        store.append_many(burst)
        counter[0] += len(burst)
        time.sleep(0.02)


def run_workflow(store: EventStore, route: Route) -> int:
    produced = 0
    block = route.block_id
    window = datetime.now(timezone.utc) + timedelta(hours=4)
    store.append(Event(EventType.BLOCK_CLAIMED, {"station": "DXX1", "ends_at": window.isoformat()}, block=block))
    store.save_route(route)
    store.set_state("current_block", block)
    store.append(Event(EventType.ROUTE_RECEIVED, {"version": route.version, "stops": len(route.stops)}, block=block))
    produced += 2
    for package_id in route.manifest():
        stored = store.append(Event(EventType.PACKAGE_SCANNED, {"package": package_id, "result": "ok"}, block=block))
        store.set_package_status(package_id, block, "loaded", stored.id)
        produced += 1
    for stop in route.stops:
        store.append(Event(EventType.STOP_ARRIVED, {"address": stop.address}, block=block, stop=stop.id))
        for package in stop.packages:
            stored = store.append(Event(EventType.DELIVERY_PROOF, {"package": package.id, "kind": "photo"},
                                        block=block, stop=stop.id))
            store.set_package_status(package.id, block, "delivered", stored.id)
            produced += 1
        store.append(Event(EventType.STOP_DEPARTED, {}, block=block, stop=stop.id))
        produced += 2
        print(f"  stop {stop.id} {stop.address:<14} delivered {len(stop.packages)} package(s)", flush=True)
        time.sleep(0.05)
    store.append(Event(EventType.BLOCK_COMPLETED, {"stops": len(route.stops)}, block=block))
    return produced + 1


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("demo", parents=[common], help="run the agent end to end on simulated input")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--stops", type=int, default=8)
    p.add_argument("--report", metavar="FILE", help="write the report JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx: Context = load_context(args)
    if not args.data_dir and not ctx.config.data_dir:
        ctx = Context(ctx.config, Path(tempfile.mkdtemp(prefix="flexedge-demo-")))
    rng = random.Random(args.seed)
    route = demo_route(rng, args.stops)
    print(f"flexedge demo: data in {ctx.data_dir}; block {route.block_id}, {len(route.stops)} stops, "
          f"{len(route.manifest())} packages", flush=True)
    started = time.perf_counter()
    with ctx.open_store() as store:
        before = store.stats().last_seq
        stop_flag = threading.Event()
        gps_count = [0]
        gps = threading.Thread(target=drive, args=(store, route, stop_flag, gps_count), daemon=True)
        gps.start()
        workflow_events = run_workflow(store, route)
        stop_flag.set()
        gps.join()
        stats = store.stats()
        chain = store.verify_chain()
        integrity = store.integrity_check()
    elapsed = time.perf_counter() - started
    produced = workflow_events + gps_count[0]
    report = {"events_produced": produced, "events_stored": stats.last_seq - before,
              "gps_points": gps_count[0], "outbox": asdict(stats), "chain": asdict(chain),
              "integrity": integrity, "seconds": round(elapsed, 2), "data_dir": str(ctx.data_dir)}
    print(f"stored {report['events_stored']} of {produced} events in {elapsed:.2f} s "
          f"({report['events_stored'] / elapsed:.0f}/s); outbox depth {stats.depth} "
          f"{stats.depth_by_lane}; hash chain {'ok' if chain.ok else 'BROKEN'}; integrity {integrity}")
    print(json.dumps(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0 if chain.ok and integrity == "ok" and report["events_stored"] == produced else 1
