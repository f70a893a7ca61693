"""`flexedge cloud`: the reference cloud peer (ingest workers + dispatcher) as a real program.

    flexedge cloud --db cloud.sqlite --broker 127.0.0.1:8883 --pki DIR [--workers 2] [--blocks blocks.json]
                   [--http HOST:PORT]
    flexedge cloud --db postgresql://USER@HOST/DB --photo-dir DIR --workers 4 [--http HOST:PORT] ...
                                                       # a fleet on PostgreSQL
    flexedge cloud photos --db cloud.sqlite [--json]     # the proof photos it holds, one line each
    flexedge cloud user add NAME --role operator|manager [--station S] --accounts FILE
    flexedge cloud command DEVICE NAME [KEY=VALUE ...] [--json-args OBJECT] --pki DIR --db cloud.sqlite|URL
                   [--broker HOST:PORT] [--ttl S] [--timeout S] [--json]
                                                       # a signed command; prints the van's command.result

`--pki DIR` takes ca.crt, the certificate of each connection (CN = client id, `flexedge pki cloud`),
signing.key and the stations map (device -> station: a device claims blocks of its own station only) from a
`flexedge pki` directory. `--blocks` offers blocks at start: a JSON list of {"block": {...}, "route": {...}}.

`--workers 1` (the default) runs everything in this process. `--workers N` with N > 1 starts N ingest worker
processes (device/cli/cloud_workers.py), each one MQTT connection `{prefix}-ingest-{I}` in `$share/ingest`;
this process dispatches (unless --no-dispatch) and serves the page. Several machines each run
`flexedge cloud --workers N --client-prefix P` on the same database with distinct prefixes (certificates from
`flexedge pki cloud --cloud-prefix P --workers N`); one of them dispatches.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import aiomqtt

from cloud_sync.cloud.commands import (
    DEFAULT_TTL_S,
    CommandResult,
    command_args,
    new_command,
    publish_command,
    wait_result,
)
from cloud_sync.cloud.db import CloudDb
from cloud_sync.cloud.engine import is_postgres
from cloud_sync.cloud.operator_identity import add_identity_arguments, operator_identity
from cloud_sync.cloud.peer import CloudPeer, CloudSettings, Credentials
from cloud_sync.cloud.web import actions as web_actions
from cloud_sync.cloud.web import cli as web_cli
from cloud_sync.cloud.web.accounts import AccountError
from cloud_sync.cloud.web.server import HttpSettings, OperatorServer, OperatorServerError
from cloud_sync.connection import BrokerSettings
from cloud_sync.errors import SyncError
from cloud_sync.pki import CLOUD_IDENTITY, Pki
from cloud_sync.signing import Signer
from device.cli.cloud_release import register_release_command
from device.cli.cloud_workers import WorkerPool, WorkerStartError, exit_when_parent_goes, worker_argv
from device.cli.common import CliError, Exit, Subparsers, emit, load_context
from device.contract.domain import Block, DomainError, Route

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("cloud", parents=[common], help="run the reference cloud peer (ingest + dispatch)")
    p.add_argument("--db", type=db_target, help="SQLite database file or postgresql:// URL (required)")
    p.add_argument("--photo-dir", type=Path,
                   help="photo files (default: beside a SQLite database, <db>-photos/; required with PostgreSQL)")
    p.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT of the MQTT broker")
    p.add_argument("--pki", type=Path, help="PKI directory (ca.crt, cloud.crt/.key, signing.key)")
    p.add_argument("--plain", action="store_true", help="no TLS (a loopback development broker)")
    p.add_argument("--fleet", help="fleet name (default: device.fleet of the config)")
    p.add_argument("--workers", type=int, default=1,
                   help="ingest workers sharing $share/ingest: 1 in this process, N > 1 as N worker processes")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # a worker process of --workers N
    p.add_argument("--no-dispatch", action="store_true", help="ingest only (another process dispatches)")
    p.add_argument("--client-prefix", default=CLOUD_IDENTITY,
                   help="MQTT client id prefix (unique per process; the certificates are named after the ids)")
    p.add_argument("--max-open-blocks", type=int, default=CloudSettings.max_open_blocks,
                   help="blocks one device may hold at once")
    p.add_argument("--blocks", type=Path, help="JSON list of {block, route} to offer at start")
    web_cli.add_http_arguments(p)
    p.add_argument("--traffic", type=Path, help="traffic/weather factor feed (JSON lines): re-plans touched blocks")
    p.add_argument("--replan-time-limit", type=float, default=2.0, help="solver seconds per re-planned block")
    p.set_defaults(func=run)
    views = p.add_subparsers(dest="cloud_command")
    photos = views.add_parser("photos", help="list the stored proof photos and exit")
    photos.add_argument("--db", required=True, type=db_target, help="SQLite database file or postgresql:// URL")
    photos.add_argument("--photo-dir", type=Path, help="photo files (default: beside the database, <db>-photos/)")
    photos.add_argument("--json", action="store_true", help="one JSON object per photo")
    photos.set_defaults(func=list_photos)
    web_cli.register_user_command(views)
    register_release_command(views)
    command = views.add_parser("command", help="send a signed command to a van and print its command.result")
    command.add_argument("device", help="the van's id")
    command.add_argument("name", help="selftest, set_config, upload_logs, restart, ...")
    command.add_argument("pairs", nargs="*", metavar="KEY=VALUE",
                         help="arguments; a value is read as JSON when it parses (1, true, [..]), else as text")
    command.add_argument("--json-args", metavar="OBJECT", help="the arguments as one JSON object (KEY=VALUE after it)")
    command.add_argument("--pki", required=True, type=Path, help="PKI directory (ca.crt, cloud.crt/.key, signing.key)")
    command.add_argument("--db", type=db_target, help="the cloud's database (SQLite file or postgresql:// URL): "
                         "wait there for the result (without it: send only)")
    command.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT of the MQTT broker")
    command.add_argument("--fleet", help="fleet name (default: device.fleet of the config)")
    add_identity_arguments(command)
    command.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds the van may still execute it")
    command.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the result")
    command.add_argument("--json", action="store_true", help="the result as one JSON object")
    command.set_defaults(func=send_command)


def db_target(value: str) -> Path | str:
    """A postgresql:// URL as it is, anything else a SQLite file."""
    return value if is_postgres(value) else Path(value)


def _load_blocks(path: Path) -> list[tuple[Block, Route]]:
    try:
        doc = json.loads(path.read_text())
        return [(Block.from_dict(item["block"]), Route.from_dict(item["route"])) for item in doc]
    except (OSError, ValueError, KeyError, TypeError, DomainError) as exc:
        raise SyncError(f"cannot read blocks from {path}: {exc}") from exc


def list_photos(args: argparse.Namespace) -> int:
    """One line per stored photo: photo_id, device, event_id, sha256, path, bytes (and its check)."""
    if isinstance(args.db, Path) and not args.db.exists():
        print(f"flexedge cloud photos: no database at {args.db}", file=sys.stderr)
        return 2
    try:
        db = CloudDb(args.db, args.photo_dir)
    except SyncError as exc:
        raise CliError(str(exc)) from None
    try:
        rows = db.photo_rows()
    finally:
        db.close()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for row in rows:
        print(f"{row['photo_id']}  {row['device']}  event {row['event_id'] or '-'}  {row['sha256']}  "
              f"{row['path']}  {row['bytes']} bytes  {row['status']}")
    print(f"{len(rows)} photos, {sum(1 for r in rows if r['status'] != 'ok')} not ok")
    return 0


def send_command(args: argparse.Namespace) -> int:
    """Exit 0: the van answered ok; 1: it answered failed or rejected, or no answer within --timeout."""
    if args.name == web_actions.WITHDRAW:
        raise CliError(f"{web_actions.WITHDRAW} is sent by a re-offer (the operator page's action), which frees the "
                       "block in the cloud too; sent alone, the van would drop a block the cloud still lists as its")
    fleet = args.fleet or load_context(args).config.device.fleet
    host, _, port = args.broker.rpartition(":")
    try:
        pairs = command_args(args.pairs, args.json_args)
    except ValueError as exc:
        raise CliError(f"arguments: {exc}") from None
    try:
        pki = Pki(args.pki)
        signer = Signer.from_pem_file(pki.signing_key)
        credentials = _pki_credentials(pki, host or "127.0.0.1", int(port))
    except (SyncError, ValueError) as exc:
        raise CliError(str(exc)) from None
    command = new_command(args.device, args.name, pairs, args.ttl)

    async def send_and_wait(client_id: str) -> CommandResult | None:
        await publish_command(credentials(client_id), client_id, fleet, signer, command)
        log.info("command %s %s sent to %s as %s", command.name, command.id, command.device, client_id)
        if args.db is None:
            return None
        return await wait_result(args.db, command.device, command.id, args.timeout)
    try:
        with operator_identity(pki, args.client_prefix, args.client_id) as client_id:
            result = asyncio.run(send_and_wait(client_id))
    except aiomqtt.MqttError as exc:
        raise CliError(f"broker {args.broker}: {exc}", Exit.FAILED) from None
    except SyncError as exc:  # the database cannot be read, no operator identity is free
        raise CliError(str(exc), Exit.FAILED) from None
    sent = {"id": command.id, "device": command.device, "name": command.name, "args": dict(command.args),
            "client_id": client_id}
    if result is None:
        state = "sent" if args.db is None else "timeout"
        emit(args, {"command": sent, "status": state},
             f"{command.device} {command.name} {command.id}: " +
             ("sent (no --db: not waiting)" if args.db is None else f"no result within {args.timeout:.0f} s"))
        return Exit.OK if args.db is None else Exit.FAILED
    emit(args, {"command": sent, **result.to_dict()},
         f"{command.device} {command.name} {command.id}: {result.status}: {result.detail}" +
         (f"\n{json.dumps(dict(result.data), indent=1, sort_keys=True)}" if result.data else ""))
    return Exit.OK if result.status == "ok" else Exit.FAILED


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    host, _, port = args.broker.rpartition(":")
    stations: dict[str, str] = {}
    try:
        if args.db is None:
            raise SyncError("--db FILE|URL is required")
        if is_postgres(args.db) and args.photo_dir is None:
            raise SyncError("--photo-dir DIR is required with a PostgreSQL database")
        if args.workers < 1:
            raise SyncError("--workers must be at least 1")
        credentials: Credentials
        if args.plain:
            plain = BrokerSettings(host or "127.0.0.1", int(port))
            credentials = lambda client_id: plain  # noqa: E731
            signer = Signer.from_pem_file(args.pki / "signing.key") if args.pki else Signer.generate()
        else:
            if args.pki is None:
                raise SyncError("--pki DIR is required with TLS (or pass --plain)")
            credentials = _pki_credentials(Pki(args.pki), host or "127.0.0.1", int(port))
            signer = Signer.from_pem_file(Pki(args.pki).signing_key)
        if args.pki is not None:
            stations = Pki(args.pki).stations()
        blocks = _load_blocks(args.blocks) if args.blocks else []
        http = web_cli.http_settings(args, args.pki)
        CloudDb(args.db, args.photo_dir).close()  # reachable, migrated: before any worker connects
    except (SyncError, ValueError, AccountError) as exc:
        raise CliError(str(exc)) from None
    fleet = args.fleet or ctx.config.device.fleet
    if args.worker_index is not None:
        worker = CloudSettings(fleet=fleet, db=args.db, ingest_workers=args.workers, dispatch=False,
                               client_prefix=args.client_prefix, photo_dir=args.photo_dir,
                               ingest_index=args.worker_index)
        return asyncio.run(_serve_worker(worker, credentials, signer))
    if not stations:
        log.warning("no stations map (stations.json in the PKI directory): every claim will be refused")
    pool = WorkerPool(worker_argv(_worker_options(args, fleet)), args.workers) if args.workers > 1 else None
    settings = CloudSettings(fleet=fleet, db=args.db, ingest_workers=0 if pool else args.workers,
                             dispatch=not args.no_dispatch, client_prefix=args.client_prefix,
                             photo_dir=args.photo_dir, stations=stations, max_open_blocks=args.max_open_blocks)
    return asyncio.run(_serve(settings, credentials, signer, blocks, http, args.traffic, args.replan_time_limit,
                              pool))


def _worker_options(args: argparse.Namespace, fleet: str) -> list[str]:
    """The options of a worker process: the same broker, identity, database and photos as this one."""
    options = ["--db", str(args.db), "--broker", args.broker, "--fleet", fleet, "--client-prefix",
               args.client_prefix, "--workers", str(args.workers), "--no-dispatch"]
    for flag, value in (("--photo-dir", args.photo_dir), ("--pki", args.pki), ("--config", args.config),
                        ("--data-dir", args.data_dir), ("--log-level", args.log_level)):
        if value is not None:
            options += [flag, str(value)]
    return options + (["--plain"] if args.plain else [])


async def _start_peer(settings: CloudSettings, credentials: Credentials, signer: Signer
                      ) -> tuple[CloudPeer, asyncio.Task[None]]:
    """The peer running on this loop, stopped by SIGTERM/SIGINT; returns once every connection subscribed."""
    peer = CloudPeer(settings, credentials, signer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, peer.stop)
    runner = asyncio.create_task(peer.run())
    await peer.ready.wait()
    return peer, runner


async def _serve_worker(settings: CloudSettings, credentials: Credentials, signer: Signer) -> int:
    """One ingest worker process: ready on stdout, until SIGTERM or the end of stdin (the supervisor's pipe)."""
    peer, runner = await _start_peer(settings, credentials, signer)
    print(json.dumps({"ready": True, "worker": settings.ingest_index, "pid": os.getpid()}), flush=True)
    orphan = asyncio.create_task(exit_when_parent_goes())
    orphan.add_done_callback(lambda _: peer.stop())
    try:
        await runner
    finally:
        orphan.cancel()
    return 0


def _pki_credentials(pki: Pki, host: str, port: int) -> Credentials:
    def credentials(client_id: str) -> BrokerSettings:
        issued = pki.client(client_id)
        return BrokerSettings(host, port, str(pki.ca_cert), str(issued.cert_path), str(issued.key_path))
    return credentials


async def _serve(settings: CloudSettings, credentials: Credentials, signer: Signer,
                 blocks: list[tuple[Block, Route]], http: HttpSettings | None = None, traffic: Path | None = None,
                 replan_s: float = 2.0, pool: WorkerPool | None = None) -> int:
    peer, runner = await _start_peer(settings, credentials, signer)
    supervisor = None
    if pool is not None:
        try:
            await pool.start()
        except WorkerStartError as exc:
            print(f"flexedge cloud: {exc}", file=sys.stderr)
            await pool.stop()
            peer.stop()
            await runner
            return 2
        supervisor = asyncio.create_task(pool.supervise())
    if blocks and settings.dispatch:
        await peer.add_blocks(blocks)
    log.info("cloud ready: fleet %s, %d ingest workers%s", settings.fleet,
             len(pool.workers) if pool else settings.ingest_workers, " (processes)" if pool else "")
    page = None
    if http is not None:
        act = web_actions.reoffer(settings.db, peer.add_blocks, peer.publish_command) if settings.dispatch else None
        page = OperatorServer(http, act, peer.send_command if settings.dispatch else None)
        try:
            await page.start()
        except OperatorServerError as exc:
            print(f"flexedge cloud: {exc}", file=sys.stderr)
            if pool is not None:
                await pool.stop()
            peer.stop()
            await runner
            return 2
    print(json.dumps({"ready": True, "fleet": settings.fleet, **({"http": page.url} if page else {}),
                      **({"workers": pool.pids} if pool else {})}), flush=True)
    follower, db = None, None
    if traffic is not None and settings.dispatch:
        from cloud_sync.cloud.planning.travel import RoadModelTimes  # PyVRP only where re-planning is asked for
        from cloud_sync.cloud.replanner import Replanner

        db = CloudDb(settings.db, settings.photo_dir)
        follower = asyncio.create_task(Replanner(peer, db, RoadModelTimes(), replan_s).follow(traffic))
    try:
        await runner
    finally:
        if pool is not None:
            await pool.stop()
        if supervisor is not None:
            supervisor.cancel()
        if page is not None:
            await page.stop()
        if follower is not None:
            follower.cancel()
        if db is not None:
            db.close()
    return 0
