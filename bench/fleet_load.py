"""Fleet load: N simulated vans against a real mutual-TLS mosquitto and the real cloud (`flexedge cloud`, started
with its command line as an operator does), and the raw insert ceiling of the same rows in the same run.

    python bench/fleet_load.py [--devices N] [--seconds S] [--db FILE|postgresql://...] [--workers W]
                               [--procs P] [--rate EVENTS_PER_S_PER_VAN] [--batch-events B] [--inflight K]

Each van (device.testbench.van_swarm) is a light MQTT 5 client with its own certificate, client id = the
certificate's name, speaking the device's side of the contract: event batches with seqs and the hash chain,
waiting for the cloud's acks (resending after the ack timeout), a retained status with a Last Will, and claims of
its station's offered blocks (MQTT 5 response topic + correlation data). The vans run P per load-generator
process on asyncio (aiomqtt, the library the project uses). `--rate 0` (the default) is a backlog, as after an
outage: every van sends as fast as its acks come back (K batches of B events in flight); `--rate R` makes R events
per second per van.

Printed (one JSON line on stdout, a readable summary on stderr): events/s ingested (stored and acked, from the
go to the last ack), p50/p99 batch ack latency, claims sent and answered (each exactly once; no block granted
twice), lost / duplicates counted in the cloud's database against what the vans made (and the verified chain
head of every van), the CPU seconds and RSS of the broker, of every cloud process (and of the PostgreSQL
backends serving it) and of the load generators, and the ceiling: the same rows bulk-inserted into the same
table (`executemany` in one transaction into SQLite, `COPY` into PostgreSQL) with the ratio ingested / ceiling.
`--db postgresql://USER@HOST:PORT/DB` runs in a scratch database created on that server (dropped at the end).

Measured here (SQLite cloud, 1 ingest worker, 30 s; 2 cores shared with other work at load average 6-12; the
whole table and the reading of it in README, "Faults and benchmarks"):
    vans    events/s   ack p50/p99      ceiling ev/s  ratio  % of a core: cloud / broker / each generator
    50      9,045      0.4 s / 0.9 s    79,546        0.11   34 / 2 / 24
    200     11,689     1.6 s / 3.4 s    184,663       0.06   48 / 4 / 39
    1,000   12,838     7.2 s / 9.1 s    201,781       0.06   57 / 6 / 15
lost 0 and duplicates 0 in each. The cloud saturates first, on one fsync per batch, claim and status taken one at
a time (130-260 commits/s), with CPU to spare; the broker and the generators stay far below it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud_sync.messages import Compression  # noqa: E402
from device.contract.domain import Block, Package, Route, Stop  # noqa: E402
from device.testbench import load_audit, proc_usage  # noqa: E402
from device.testbench.broker import MosquittoBroker  # noqa: E402
from device.testbench.fleet import LocalFleet  # noqa: E402
from device.testbench.van_swarm import SwarmSettings, VanPlan, VanReport, swarm_process  # noqa: E402

FLEET = "load"
REPO = Path(__file__).resolve().parent.parent
CLOUD_PREFIX = "cloud"
READY_TIMEOUT_S = 60.0
GO_DELAY_S = 1.0  # the generators start together this long after the last one connected


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seconds", type=float, default=30.0, help="how long the vans make events")
    p.add_argument("--db", help="cloud database: a new SQLite file (default: in the work dir) or postgresql://...")
    p.add_argument("--workers", type=int, default=1, help="passed to `flexedge cloud --workers`")
    p.add_argument("--procs", type=int, default=0, help="load-generator processes (default: one per 250 vans, "
                                                         "at most 4)")
    p.add_argument("--rate", type=float, default=0.0, help="events/s per van; 0: a backlog sent as fast as acked")
    p.add_argument("--batch-events", type=int, default=50)
    p.add_argument("--inflight", type=int, default=2, help="unacked batches per van")
    p.add_argument("--ack-timeout", type=float, default=SwarmSettings.ack_timeout_s)
    p.add_argument("--unpaced", action="store_true", help="vans keep --inflight and --ack-timeout fixed instead of "
                                                          "following the acks (cloud_sync.ack_pacing)")
    p.add_argument("--status-interval", type=float, default=SwarmSettings.status_interval_s)
    p.add_argument("--claims-per-van", type=int, default=1)
    p.add_argument("--claim-timeout", type=float, default=SwarmSettings.claim_timeout_s,
                   help="a claim unanswered this long is asked again (the device's claim timeout)")
    p.add_argument("--devices-per-station", type=int, default=50)
    p.add_argument("--blocks-per-station", type=int, default=0, help="default: half the station's vans")
    p.add_argument("--compression", choices=[c.value for c in Compression], default=Compression.ZSTD.value)
    p.add_argument("--drain-timeout", type=float, default=SwarmSettings.drain_timeout_s)
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, PKI, database)")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def raise_file_limit() -> int:
    """The broker and the generators hold a socket per van: the soft limit up to the hard one (inherited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def station_map(devices: int, per_station: int) -> dict[str, str]:
    return {f"van-{i:05d}": f"ST{i // per_station:03d}" for i in range(devices)}


def blocks_file(path: Path, stations: set[str], per_station: int) -> int:
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    items = []
    for station in sorted(stations):
        for n in range(per_station):
            block_id = f"B-{station}-{n:03d}"
            route = Route(block_id, 1, tuple(Stop(f"S{i}", f"{10 + i} Pine St", str(10 + i), 47.61 + i / 1000,
                                                  -122.34, (Package(f"TBA{block_id}{i:03d}"),)) for i in range(3)))
            block = Block(block_id, station, start, start + timedelta(hours=4), pay_cents=9000)
            items.append({"block": block.to_dict(), "route": route.to_dict()})
    path.write_text(json.dumps(items))
    return len(items)


def start_cloud(args: argparse.Namespace, work: Path, db: str, port: int, blocks: Path) -> subprocess.Popen[bytes]:
    """`flexedge cloud` exactly as an operator starts it; returns once it printed its ready line."""
    log = open(work / "cloud.log", "wb")  # noqa: SIM115 - the child writes it until it ends
    cloud = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "cloud", "--db", db, "--photo-dir", str(work / "photos"),
         "--fleet", FLEET, "--broker", f"127.0.0.1:{port}",
         "--pki", str(work / "pki"), "--workers", str(args.workers), "--client-prefix", CLOUD_PREFIX,
         "--blocks", str(blocks), "--log-level", args.log_level],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
        env={**os.environ, "FLEXEDGE_DATA_DIR": str(work / "cloud-data")})
    log.close()
    assert cloud.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([cloud.stdout], [], [], left)
        line = cloud.stdout.readline() if readable else b""
        if b'"ready"' in line:
            return cloud
        if not line and (readable or cloud.poll() is not None):
            break  # it ended
    with contextlib.suppress(ProcessLookupError):
        os.killpg(cloud.pid, signal.SIGKILL)
    cloud.wait()
    raise RuntimeError(f"flexedge cloud did not start within {READY_TIMEOUT_S:.0f} s (exit {cloud.returncode}): "
                       f"{(work / 'cloud.log').read_text()[-2000:]}")


def stop_cloud(cloud: subprocess.Popen[bytes]) -> int:
    try:
        os.killpg(cloud.pid, signal.SIGTERM)
        return cloud.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(cloud.pid, signal.SIGKILL)
        cloud.wait()
        return -9
    except ProcessLookupError:
        return cloud.wait()


def percentile_ms(values: list[float], q: int) -> float | None:
    """The q-th percentile of durations in seconds, in ms; None without any."""
    if not values:
        return None
    seconds = statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]
    return round(seconds * 1000, 1)


def cpu_of(pids: list[int]) -> dict[int, proc_usage.Usage]:
    found = {}
    for pid in pids:
        try:
            found[pid] = proc_usage.usage(pid)
        except OSError:
            continue
    return found


def run_generators(plans: list[VanPlan], settings: SwarmSettings, procs: int, signing_pub: Path,
                   log_level: str, servers: list[int]) -> tuple[list[VanReport], dict[str, Any]]:
    """Start the generator processes, go when every one connected its vans, collect their reports. Returns the
    reports and timing/CPU figures (connect time, the go moment, each generator's CPU during the run, the
    `servers`' usage at the go)."""
    context = multiprocessing.get_context("spawn")
    children = []
    share = math.ceil(len(plans) / procs)
    connect_started = time.monotonic()
    for n in range(procs):
        mine, theirs = context.Pipe()
        proc = context.Process(target=swarm_process, args=(theirs, plans[n * share:(n + 1) * share], settings,
                                                           signing_pub, log_level), name=f"swarm-{n}")
        proc.start()
        theirs.close()
        children.append((proc, mine))
    connected = 0
    try:
        for proc, conn in children:
            if not conn.poll(max(120.0, len(plans) * 0.2)):
                raise RuntimeError(f"{proc.name} did not connect its vans")
            kind, count = conn.recv()
            connected += count
        connect_s = time.monotonic() - connect_started
        servers_at_go = cpu_of(servers)
        go_at = time.time() + GO_DELAY_S
        for _, conn in children:
            conn.send(go_at)
        reports: list[VanReport] = []
        generators = []
        for proc, conn in children:
            if not conn.poll(settings.seconds + settings.drain_timeout_s + 120):
                raise RuntimeError(f"{proc.name} sent no reports")
            kind, part, usage = conn.recv()
            reports += part
            generators.append({"pid": proc.pid, "vans": len(part), "cpu_s": round(usage["cpu_s"], 2),
                               "peak_rss_mb": round(usage["peak_rss_mb"], 1)})
    finally:
        for proc, conn in children:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
    return reports, {"connected": connected, "connect_s": round(connect_s, 2), "go_at": go_at,
                     "generators": generators, "servers_at_go": servers_at_go}


def claims_summary(reports: list[VanReport], winners: dict[str, str | None]) -> dict[str, Any]:
    sent = sum(len(r.claims) for r in reports)
    answers = [len(a) for r in reports for a in r.claims.values()]
    # The cloud answers every request message once: a claim asked again (after a reconnect or its timeout) may
    # get two.
    over_answered = sum(1 for r in reports for rid, a in r.claims.items() if len(a) > r.claim_asks.get(rid, 0))
    granted: dict[str, list[str]] = {}
    for r in reports:
        for request_id, statuses in r.claims.items():
            if "granted" in statuses:
                granted.setdefault(r.claimed_blocks[request_id], []).append(r.device)
    wrong_winner = sum(1 for block, devices in granted.items() if winners.get(block) not in devices)
    latencies = [s for r in reports for s in r.claim_latencies_s]
    statuses: dict[str, int] = {}
    for r in reports:
        for answer in r.claims.values():
            for status in answer:
                statuses[status] = statuses.get(status, 0) + 1
    return {"sent": sent, "answered_once": answers.count(1), "unanswered": answers.count(0),
            "answered_twice_or_more": sum(1 for n in answers if n > 1), "answered_more_than_asked": over_answered,
            "republished": sum(r.claims_republished for r in reports),
            "reasked_after_timeout": sum(r.claims_reasked for r in reports), "skipped_no_open_block":
            sum(r.claims_skipped for r in reports), "statuses": statuses,
            "blocks_granted_twice": sum(1 for devices in granted.values() if len(devices) > 1),
            "granted_not_winner_in_db": wrong_winner,
            "p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_file_limit()
    procs = args.procs or max(1, min(4, math.ceil(args.devices / 250)))
    settings = SwarmSettings(
        FLEET, args.seconds, rate_per_van=args.rate, batch_events=args.batch_events,
        inflight_batches=args.inflight, ack_timeout_s=args.ack_timeout, paced=not args.unpaced,
        status_interval_s=args.status_interval,
        claims_per_van=args.claims_per_van, claim_timeout_s=args.claim_timeout,
        compression=Compression(args.compression),
        drain_timeout_s=args.drain_timeout)
    work = Path(tempfile.mkdtemp(prefix="flexedge-fleet-load-"))
    stations = station_map(args.devices, args.devices_per_station)
    started = time.perf_counter()
    fleet = LocalFleet.create(work / "pki", FLEET, stations, "Flex Edge load fleet", cloud_prefixes=(CLOUD_PREFIX,),
                              cloud_workers=max(args.workers, 1))
    pki_s = time.perf_counter() - started
    blocks = blocks_file(work / "blocks.json", set(stations.values()),
                         args.blocks_per_station or max(1, args.devices_per_station // 2))
    scratch = None
    if args.db and load_audit.is_postgres(args.db):
        scratch = f"flexedge_load_{os.getpid()}_{int(time.time())}"
        db = load_audit.create_scratch_database(args.db, scratch)
    else:
        db = args.db or str(work / "cloud.db")
        if Path(db).exists():
            raise SystemExit(f"{db} exists: the bench needs a new database file")
    broker = MosquittoBroker(work / "mosquitto", extra_config=fleet.mosquitto_config(), autosave_interval_s=1800)
    broker.start()
    cloud = None
    try:
        cloud = start_cloud(args, work, db, broker.port, work / "blocks.json")
        assert broker.pid is not None
        cloud_pids = proc_usage.process_tree(cloud.pid)
        plans = [VanPlan(device, station, fleet.broker_settings(device, broker.port))
                 for device, station in stations.items()]
        servers_at_start = cpu_of([broker.pid, *cloud_pids])
        reports, gen = run_generators(plans, settings, procs, fleet.pki.signing_pub, args.log_level,
                                      [broker.pid, *cloud_pids])
        cloud_pids = proc_usage.process_tree(cloud.pid)  # workers a cloud spawns show up once running
        servers_after = cpu_of([broker.pid, *cloud_pids])
        db_backends = cpu_of(load_audit.backend_pids(db)) if scratch else {}
        cloud_status = stop_cloud(cloud)
        cloud = None
        result = audit_and_report(args, db, reports, gen, gen["servers_at_go"], servers_after, db_backends,
                                  broker.pid, cloud_status)
        if broker.pid in servers_at_start and broker.pid in gen["servers_at_go"]:
            result["broker_connect_cpu_s"] = round(gen["servers_at_go"][broker.pid].cpu_s
                                                   - servers_at_start[broker.pid].cpu_s, 2)
        result.update({"pki_s": round(pki_s, 2), "certificates": len(stations) + args.workers + 2,
                       "generator_procs": procs, "blocks_offered": blocks})
        ceiling = load_audit.insert_ceiling(db)
        result["raw_insert_events_per_s"] = round(ceiling.rows_per_s)
        result["raw_insert_method"] = ceiling.method
        result["ratio"] = round(result["events_per_s"] / ceiling.rows_per_s, 3) if ceiling.rows_per_s else None
        return result
    finally:
        if cloud is not None:
            stop_cloud(cloud)
        broker.stop()
        if scratch is not None and not args.keep:
            load_audit.drop_database(args.db, scratch)
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)


def audit_and_report(args: argparse.Namespace, db: str, reports: list[VanReport], gen: dict[str, Any],
                     before: dict[int, proc_usage.Usage], after: dict[int, proc_usage.Usage],
                     db_backends: dict[int, proc_usage.Usage], broker_pid: int, cloud_status: int) -> dict[str, Any]:
    found = load_audit.audit(db, {r.device: (r.produced, r.head_hash) for r in reports})
    last_ack = max((r.last_ack_at for r in reports), default=0.0)
    elapsed = max(last_ack - gen["go_at"], 1e-9)
    acked = sum(r.acked for r in reports)
    latencies = [s for r in reports for s in r.ack_latencies_s]

    def delta(pid: int) -> dict[str, Any]:
        now, then = after[pid], before.get(pid)
        return {"pid": pid, "cmd": now.name, "cpu_s": round(now.cpu_s - (then.cpu_s if then else 0.0), 2),
                "rss_mb": round(now.rss_mb, 1), "peak_rss_mb": round(now.peak_rss_mb, 1)}
    claims = claims_summary(reports, found.winners)
    result: dict[str, Any] = {
        "bench": "fleet_load", "devices": args.devices, "seconds": args.seconds, "workers": args.workers,
        "db": "postgresql" if load_audit.is_postgres(db) else "sqlite", "rate_per_van": args.rate,
        "batch_events": args.batch_events, "inflight": args.inflight, "paced": not args.unpaced,
        "figure": "events_per_s", "baseline": "raw_insert_events_per_s",
        "events_per_s": round(found.stored / elapsed), "events_produced": found.produced,
        "events_stored": found.stored, "events_acked": acked, "run_s": round(elapsed, 1),
        "lost": found.lost, "duplicates": found.duplicates, "unexpected_rows": found.unexpected,
        "chain_head_mismatch": found.chain_mismatch, "flags": found.flags, "clock_flags": found.clock_flags,
        "ack_p50_ms": percentile_ms(latencies, 50), "ack_p99_ms": percentile_ms(latencies, 99),
        "batches": sum(r.batches for r in reports), "batches_resent": sum(r.batches_resent for r in reports),
        "claims": claims, "vans_connected": gen["connected"], "vans_drained": sum(r.drained for r in reports),
        "not_drained": [{"device": r.device, "phase": r.phase, "errors": r.errors, "unacked": r.unacked_at_end,
                         "connects": r.connects,
                         "connect_failures": r.connect_failures,
                         "claims_unanswered": sum(1 for a in r.claims.values() if not a)}
                        for r in reports if not r.drained][:5],
        "connect_s": gen["connect_s"], "reconnects": sum(max(0, r.connects - 1) for r in reports),
        "van_rejects": sum(r.rejects for r in reports), "routes_received": sum(r.routes for r in reports),
        "granted_without_route": sum(len(r.routes_missing()) for r in reports),
        "broker": delta(broker_pid) if broker_pid in after else None,
        "cloud": [delta(pid) for pid in after if pid != broker_pid],
        "db_backends": [{"pid": u.pid, "cpu_s": round(u.cpu_s, 2), "rss_mb": round(u.rss_mb, 1),
                         "peak_rss_mb": round(u.peak_rss_mb, 1)} for u in db_backends.values()],
        "generators": gen["generators"], "cloud_exit": cloud_status,
    }
    result["ok"] = (found.lost == 0 and found.duplicates == 0 and found.unexpected == 0
                    and found.chain_mismatch == 0 and not found.flags and claims["unanswered"] == 0
                    and claims["answered_more_than_asked"] == 0 and claims["blocks_granted_twice"] == 0
                    and claims["granted_not_winner_in_db"] == 0 and result["granted_without_route"] == 0
                    and gen["connected"] == args.devices
                    and cloud_status == 0)
    return result


def summary(result: dict[str, Any]) -> str:
    c = result["claims"]
    lines = [
        f"fleet_load: {result['devices']} vans ({result['vans_connected']} connected in {result['connect_s']} s, "
        f"{result['certificates']} certificates in {result['pki_s']} s), {result['seconds']} s, "
        f"{result['db']} cloud with {result['workers']} ingest worker(s), {result['generator_procs']} generator(s)",
        f"  ingested {result['events_per_s']} events/s ({result['events_stored']} stored of "
        f"{result['events_produced']} made in {result['run_s']} s); raw insert ceiling "
        f"{result['raw_insert_events_per_s']} events/s ({result['raw_insert_method']}); ratio {result['ratio']}",
        f"  batch ack latency p50 {result['ack_p50_ms']} ms, p99 {result['ack_p99_ms']} ms; "
        f"{result['batches']} batches, {result['batches_resent']} resent; {result['reconnects']} reconnects, "
        f"{result['vans_drained']} vans drained",
        f"  lost {result['lost']}, duplicates {result['duplicates']}, unexpected {result['unexpected_rows']}, "
        f"chain heads wrong {result['chain_head_mismatch']}, flags {result['flags'] or 0}, "
        f"clock flags {result['clock_flags']}",
        f"  claims sent {c['sent']} (asked again: {c['republished']} after a reconnect, "
        f"{c['reasked_after_timeout']} after the claim timeout), answered once "
        f"{c['answered_once']}, unanswered {c['unanswered']}, twice {c['answered_twice_or_more']}, more often than "
        f"asked {c['answered_more_than_asked']}, {c['statuses']}; blocks granted twice {c['blocks_granted_twice']}; "
        f"answer p50 {c['p50_ms']} ms p99 {c['p99_ms']} ms",
    ]
    procs = ([("broker", result["broker"])] if result["broker"] else []) \
        + [("cloud", p) for p in result["cloud"]] + [("db backend", p) for p in result["db_backends"]] \
        + [("generator", p) for p in result["generators"]]
    for role, p in procs:
        rss = f"rss {p['rss_mb']} MB, " if "rss_mb" in p else ""
        share = f" ({p['cpu_s'] / result['run_s'] * 100:.0f}% of a core)" if result["run_s"] else ""
        lines.append(f"  {role:<10} pid {p['pid']:>7}: cpu {p['cpu_s']:7.2f} s{share}, {rss}peak rss "
                     f"{p['peak_rss_mb']} MB")
    lines.append("  OK" if result["ok"] else "  NOT OK")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(summary(result), file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
