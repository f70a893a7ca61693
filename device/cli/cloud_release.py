"""`flexedge cloud release`: build a signed release artifact, and roll it out to vans a few at a time.

    flexedge cloud release build --source DIR --pki DIR --store DIR [--cache DIR] [--machine M] [--min-from V]
                                 [--no-download] [--json]
    flexedge cloud release publish --version V (--devices A,B,... | --fleet) --pki DIR --store DIR --db cloud.db
                                 --serve HOST:PORT [--url-host NAME] [--broker HOST:PORT] [--fleet-name F]
                                 [--canary N] [--batch N] [--timeout S] [--allow-downgrade] [--json]

`publish` serves the artifact over HTTPS with the fleet PKI for as long as it runs, sends each van a signed
`update` command (its URL, size and sha256), a canary wave first, then `--batch` vans at a time, waits for every
van's `command.result` in the cloud database (`flexedge cloud --db`), and stops when a van fails (rolled back) or
does not answer. Exit 0: every van answered ok; 1: the rollout stopped or a van refused.
"""
from __future__ import annotations

import argparse
import asyncio
import platform
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import aiomqtt

from cloud_sync.cloud.commands import new_command, publish_command, wait_result
from cloud_sync.cloud.operator_identity import add_identity_arguments, operator_identity
from cloud_sync.cloud.release.build import (
    BuildSettings,
    ReleaseBuildError,
    artifact_name,
    build_release,
    read_manifest,
    sha256_of,
)
from cloud_sync.cloud.release.rollout import RolloutReport, VanResult, roll_out
from cloud_sync.cloud.release.server import ReleaseServer, server_tls
from cloud_sync.errors import PkiError
from cloud_sync.pki import Pki
from cloud_sync.signing import Signer
from device.cli.common import CliError, Exit, emit, load_context
from device.contract.release import ReleaseError, UpdateOrder
from device.update.space import installed_estimate

DEFAULT_TIMEOUT_S = 900.0  # per van: download, install (~20 s here, minutes on a Pi), restart, health gate


def register_release_command(views: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = views.add_parser("release", help="build and roll out releases of the agent")
    actions = release.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build and sign a release artifact from a source checkout")
    build.add_argument("--source", type=Path, required=True, help="a checkout of the project")
    build.add_argument("--pki", type=Path, required=True, help="PKI directory (signing.key signs the manifest)")
    build.add_argument("--store", type=Path, required=True, help="the cloud's release folder (artifacts)")
    build.add_argument("--cache", type=Path, help="dependency wheels kept between builds (default <store>/cache)")
    build.add_argument("--machine", default=platform.machine(), help="the vans' machine: aarch64, x86_64")
    build.add_argument("--min-from", default="0.1", help="the oldest running version that may update to it")
    build.add_argument("--no-download", action="store_true", help="dependency wheels from --cache only")
    build.add_argument("--json", action="store_true", help="the result as one JSON object")
    build.set_defaults(func=run_build)
    publish = actions.add_parser("publish", help="roll a release out: canary first, then a few vans at a time")
    publish.add_argument("--version", required=True, help="the release to roll out")
    who = publish.add_mutually_exclusive_group(required=True)
    who.add_argument("--devices", help="comma-separated van ids, the canary first")
    who.add_argument("--fleet", dest="all", action="store_true", help="every van in the PKI's stations map")
    publish.add_argument("--pki", type=Path, required=True, help="PKI directory")
    publish.add_argument("--store", type=Path, required=True, help="the cloud's release folder")
    publish.add_argument("--db", type=Path, required=True, help="the cloud's database (results are read there)")
    publish.add_argument("--serve", default="0.0.0.0:8443", help="HOST:PORT the release server listens on")
    publish.add_argument("--url-host", help="the name vans reach the server by (default: the --serve host)")
    publish.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT of the MQTT broker")
    publish.add_argument("--fleet-name", help="fleet name (default: device.fleet of the config)")
    add_identity_arguments(publish)
    publish.add_argument("--machine", default=platform.machine(), help="the vans' machine")
    publish.add_argument("--canary", type=int, default=1, help="vans in the first wave")
    publish.add_argument("--batch", type=int, default=5, help="vans per later wave")
    publish.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for each van")
    publish.add_argument("--allow-downgrade", action="store_true", help="the vans accept a version not moving forward")
    publish.add_argument("--json", action="store_true", help="the report as one JSON object")
    publish.set_defaults(func=run_publish)


def run_build(args: argparse.Namespace) -> int:
    load_context(args)
    try:
        signer = Signer.from_pem_file(Pki(args.pki).signing_key)
        settings = BuildSettings(args.source.resolve(), args.store, signer, args.cache or args.store / "cache",
                                 machine=args.machine, min_from_version=args.min_from, download=not args.no_download)
        built = build_release(settings)
    except (PkiError, ReleaseBuildError, ReleaseError, OSError) as exc:
        raise CliError(f"release build: {exc}", Exit.FAILED) from None
    doc = {"artifact": str(built.path), "version": built.manifest.version, "sha256": built.sha256,
           "bytes": built.size, "files": len(built.manifest.files), "seconds": built.seconds,
           "manifest": asdict(built.manifest)}
    emit(args, doc, f"release {built.manifest.version} ({built.manifest.machine}): {built.path}, "
                    f"{built.size / 1e6:.1f} MB, {len(built.manifest.files)} files, sha256 {built.sha256}")
    return Exit.OK


def _print_step(number: int, result: VanResult) -> None:
    wave = "canary" if number == 0 else f"wave {number}"
    print(f"{wave}: {result.device} {result.status}: {result.detail}", file=sys.stderr, flush=True)


def run_publish(args: argparse.Namespace) -> int:
    from device.cli.cloud import _pki_credentials

    fleet = args.fleet_name or load_context(args).config.device.fleet
    host, _, port = args.broker.rpartition(":")
    serve_host, _, serve_port = args.serve.rpartition(":")
    artifact = args.store / artifact_name(args.version, args.machine)
    try:
        pki = Pki(args.pki)
        signer = Signer.from_pem_file(pki.signing_key)
        manifest = read_manifest(artifact)
        devices = [d for d in args.devices.split(",") if d] if args.devices else sorted(pki.stations())
        credentials = _pki_credentials(pki, host or "127.0.0.1", int(port))
        tls = server_tls(pki, [args.url_host or serve_host])
    except (PkiError, ReleaseBuildError, ReleaseError, OSError, ValueError) as exc:
        raise CliError(f"release publish: {exc}", Exit.FAILED) from None
    if manifest.version != args.version or not devices:
        raise CliError(f"release publish: {artifact} is {manifest.version}; devices: {devices}", Exit.FAILED)
    digest, size = sha256_of(artifact), artifact.stat().st_size
    installed = installed_estimate(artifact)  # the van checks its free space against it before the download

    async def publish(client_id: str) -> RolloutReport:
        server = ReleaseServer(args.store, serve_host, int(serve_port), tls, public_host=args.url_host)
        await server.start()
        order = UpdateOrder(manifest.version, server.url(artifact.name), digest, size, args.allow_downgrade, installed)

        async def send(device: str) -> str:
            command = new_command(device, "update", order.to_args(), args.timeout)
            await publish_command(credentials(client_id), client_id, fleet, signer, command)
            return command.id

        async def wait(device: str, command_id: str) -> VanResult | None:
            result = await wait_result(args.db, device, command_id, args.timeout)
            return None if result is None else VanResult(device, command_id, result.status, result.detail,
                                                         result.data)
        try:
            return await roll_out(manifest.version, devices, send, wait, canary=args.canary, batch=args.batch,
                                  on_result=_print_step)
        finally:
            await server.stop()
    started = datetime.now(timezone.utc)
    try:
        with operator_identity(pki, args.client_prefix, args.client_id) as client_id:
            # Before the waves: which identity the broker sees (and the audit shows) while the rollout runs
            print(f"release {manifest.version}: publishing as operator identity {client_id}", file=sys.stderr,
                  flush=True)
            report = asyncio.run(publish(client_id))
    except aiomqtt.MqttError as exc:
        raise CliError(f"broker {args.broker}: {exc}", Exit.FAILED) from None
    except PkiError as exc:  # no operator identity is free
        raise CliError(f"release publish: {exc}", Exit.FAILED) from None
    seconds = (datetime.now(timezone.utc) - started).total_seconds()
    ok = sum(r.status == "ok" for r in report.results)
    emit(args, {**report.to_dict(), "seconds": round(seconds, 1), "client_id": client_id},
         f"release {report.version}: {ok} of {len(devices)} vans updated in {seconds:.0f} s as {client_id}" +
         (f"; STOPPED: {report.stopped}; not reached: {', '.join(report.not_reached) or '-'}" if report.stopped
          else ""))
    return Exit.OK if report.ok else Exit.FAILED
