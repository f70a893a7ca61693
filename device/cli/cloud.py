"""`flexedge cloud`: the reference cloud peer (ingest workers + dispatcher) as a real program.

    flexedge cloud --db cloud.sqlite --broker 127.0.0.1:8883 --pki DIR [--workers 2] [--blocks blocks.json]
                   [--http HOST:PORT]
    flexedge cloud photos --db cloud.sqlite [--json]     # the proof photos it holds, one line each
    flexedge cloud user add NAME --role operator|manager [--station S] --accounts FILE
    flexedge cloud command DEVICE NAME [KEY=VALUE ...] [--json-args OBJECT] --pki DIR --db cloud.sqlite
                   [--broker HOST:PORT] [--ttl S] [--timeout S] [--json]
                                                       # a signed command; prints the van's command.result

`--pki DIR` takes ca.crt, the certificate of each connection (CN = client id, `flexedge pki cloud`),
signing.key and the stations map (device -> station: a device claims blocks of its own station only) from a
`flexedge pki` directory. `--blocks` offers blocks at start: a JSON list of {"block": {...}, "route": {...}}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from cloud_sync.cloud.commands import DEFAULT_TTL_S, CommandResult, new_command, publish_command, wait_result
from cloud_sync.cloud.db import CloudDb
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
from device.cli.common import CliError, Exit, Subparsers, emit, load_context
from device.contract.domain import Block, DomainError, Route

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("cloud", parents=[common], help="run the reference cloud peer (ingest + dispatch)")
    p.add_argument("--db", type=Path, help="SQLite database file (required to run the cloud)")
    p.add_argument("--photo-dir", type=Path, help="photo files (default: beside the database, <db>-photos/)")
    p.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT of the MQTT broker")
    p.add_argument("--pki", type=Path, help="PKI directory (ca.crt, cloud.crt/.key, signing.key)")
    p.add_argument("--plain", action="store_true", help="no TLS (a loopback development broker)")
    p.add_argument("--fleet", help="fleet name (default: device.fleet of the config)")
    p.add_argument("--workers", type=int, default=1, help="ingest workers sharing $share/ingest")
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
    photos.add_argument("--db", required=True, type=Path, help="SQLite database file")
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
    command.add_argument("--db", type=Path, help="the cloud's database: wait there for the result (without it: "
                         "send only)")
    command.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT of the MQTT broker")
    command.add_argument("--fleet", help="fleet name (default: device.fleet of the config)")
    command.add_argument("--client-id", default=CLOUD_IDENTITY, help="MQTT client id = certificate name in --pki")
    command.add_argument("--ttl", type=float, default=DEFAULT_TTL_S, help="seconds the van may still execute it")
    command.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the result")
    command.add_argument("--json", action="store_true", help="the result as one JSON object")
    command.set_defaults(func=send_command)


def _load_blocks(path: Path) -> list[tuple[Block, Route]]:
    try:
        doc = json.loads(path.read_text())
        return [(Block.from_dict(item["block"]), Route.from_dict(item["route"])) for item in doc]
    except (OSError, ValueError, KeyError, TypeError, DomainError) as exc:
        raise SyncError(f"cannot read blocks from {path}: {exc}") from exc


def list_photos(args: argparse.Namespace) -> int:
    """One line per stored photo: photo_id, device, event_id, sha256, path, bytes (and its check)."""
    if not args.db.exists():
        print(f"flexedge cloud photos: no database at {args.db}", file=sys.stderr)
        return 2
    db = CloudDb(args.db, args.photo_dir)
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


def command_args(pairs: list[str], json_args: str | None) -> dict[str, Any]:
    """`--json-args` then KEY=VALUE pairs (a value that parses as JSON is that value, else the text)."""
    try:
        args = json.loads(json_args) if json_args else {}
    except ValueError as exc:
        raise CliError(f"--json-args: not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise CliError("--json-args: expected a JSON object")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CliError(f"argument {pair!r}: expected KEY=VALUE")
        try:
            args[key] = json.loads(text)
        except ValueError:
            args[key] = text
    return args


def send_command(args: argparse.Namespace) -> int:
    """Exit 0: the van answered ok; 1: it answered failed or rejected, or no answer within --timeout."""
    fleet = args.fleet or load_context(args).config.device.fleet
    host, _, port = args.broker.rpartition(":")
    try:
        pki = Pki(args.pki)
        signer = Signer.from_pem_file(pki.signing_key)
        credentials = _pki_credentials(pki, host or "127.0.0.1", int(port))
        command = new_command(args.device, args.name, command_args(args.pairs, args.json_args), args.ttl)
    except (SyncError, ValueError) as exc:
        raise CliError(str(exc)) from None

    async def send_and_wait() -> CommandResult | None:
        await publish_command(credentials(args.client_id), args.client_id, fleet, signer, command)
        log.info("command %s %s sent to %s", command.name, command.id, command.device)
        if args.db is None:
            return None
        return await wait_result(args.db, command.device, command.id, args.timeout)
    try:
        result = asyncio.run(send_and_wait())
    except aiomqtt.MqttError as exc:
        raise CliError(f"broker {args.broker}: {exc}", Exit.FAILED) from None
    sent = {"id": command.id, "device": command.device, "name": command.name, "args": dict(command.args)}
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
            raise SyncError("--db FILE is required")
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
    except (SyncError, ValueError, AccountError) as exc:
        raise CliError(str(exc)) from None
    if not stations:
        log.warning("no stations map (stations.json in the PKI directory): every claim will be refused")
    settings = CloudSettings(fleet=args.fleet or ctx.config.device.fleet, db_path=args.db,
                             ingest_workers=args.workers, dispatch=not args.no_dispatch,
                             client_prefix=args.client_prefix, photo_dir=args.photo_dir, stations=stations,
                             max_open_blocks=args.max_open_blocks)
    return asyncio.run(_serve(settings, credentials, signer, blocks, http, args.traffic, args.replan_time_limit))


def _pki_credentials(pki: Pki, host: str, port: int) -> Credentials:
    def credentials(client_id: str) -> BrokerSettings:
        issued = pki.client(client_id)
        return BrokerSettings(host, port, str(pki.ca_cert), str(issued.cert_path), str(issued.key_path))
    return credentials


async def _serve(settings: CloudSettings, credentials: Credentials, signer: Signer,
                 blocks: list[tuple[Block, Route]], http: HttpSettings | None = None, traffic: Path | None = None,
                 replan_s: float = 2.0) -> int:
    peer = CloudPeer(settings, credentials, signer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, peer.stop)
    runner = asyncio.create_task(peer.run())
    await peer.ready.wait()
    if blocks and settings.dispatch:
        await peer.add_blocks(blocks)
    log.info("cloud ready: fleet %s, %d ingest workers, db %s", settings.fleet, settings.ingest_workers,
             settings.db_path)
    page = None
    if http is not None:
        act = web_actions.reoffer(settings.db_path, peer.add_blocks) if settings.dispatch else None
        page = OperatorServer(http, act)
        try:
            await page.start()
        except OperatorServerError as exc:
            print(f"flexedge cloud: {exc}", file=sys.stderr)
            peer.stop()
            await runner
            return 2
    print(json.dumps({"ready": True, "fleet": settings.fleet, **({"http": page.url} if page else {})}), flush=True)
    follower, db = None, None
    if traffic is not None and settings.dispatch:
        from cloud_sync.cloud.planning.travel import RoadModelTimes  # PyVRP only where re-planning is asked for
        from cloud_sync.cloud.replanner import Replanner

        db = CloudDb(settings.db_path, settings.photo_dir)
        follower = asyncio.create_task(Replanner(peer, db, RoadModelTimes(), replan_s).follow(traffic))
    try:
        await runner
    finally:
        if page is not None:
            await page.stop()
        if follower is not None:
            follower.cancel()
        if db is not None:
            db.close()
    return 0
