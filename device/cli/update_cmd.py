"""`flexedge update`: the van's side of over-the-air updates (device/update/).

    flexedge update init --releases DIR --base PREFIX   the installer: `current -> PREFIX` (the first release)
    flexedge update guard --releases DIR                the unit's first ExecStartPre: count a pending release's
                                                        starts, roll back a crash loop (always exits 0)
    flexedge update status [--releases DIR] [--json]    current, previous, pending, the last attempt
    flexedge update apply ARTIFACT [--allow-downgrade]  a technician's update from a file: verify, install, switch
                                                        (then `systemctl restart flexedge`; the gate decides)

Without --releases: `[update] releases_dir` of the config (default <data dir>/releases).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from device import __version__
from device.cli.common import CliError, Exit, Subparsers, emit, load_context, subcommand_options
from device.update.errors import UpdateError
from device.update.gate import running_release
from device.update.guard import guard
from device.update.handler import UpdateContext, apply_release, running_release_facts
from device.update.layout import Releases
from device.update.service import update_settings
from device.update.space import MIB

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("update", parents=[common], help="releases of the agent: guard, status, apply")
    actions = p.add_subparsers(dest="update_command", required=True, metavar="ACTION")
    sub = subcommand_options()
    init = actions.add_parser("init", parents=[sub], help="set up the releases folder (the installer)")
    init.add_argument("--releases", type=Path, required=True, help="the releases folder")
    init.add_argument("--base", type=Path, required=True, help="the installed release (a folder holding venv/)")
    init.set_defaults(func=run_init)
    grd = actions.add_parser("guard", parents=[sub], help="the unit's ExecStartPre: roll back a crash loop")
    grd.add_argument("--releases", type=Path, required=True, help="the releases folder")
    grd.set_defaults(func=run_guard)
    status = actions.add_parser("status", parents=[sub], help="current, previous, pending, last attempt")
    status.add_argument("--releases", type=Path, help="the releases folder (default: from the config)")
    status.set_defaults(func=run_status)
    apply = actions.add_parser("apply", parents=[sub], help="verify, install and switch to a release file")
    apply.add_argument("artifact", type=Path, help="a release tar from `flexedge cloud release build`")
    apply.add_argument("--releases", type=Path, help="the releases folder (default: from the config)")
    apply.add_argument("--allow-downgrade", action="store_true", help="accept a version that does not move forward")
    apply.set_defaults(func=run_apply)


def run_init(args: argparse.Namespace) -> int:
    made = Releases(args.releases).init(args.base.resolve())
    print(f"{args.releases}/current -> {args.base}" if made else f"{args.releases}/current exists: kept")
    return Exit.OK


def run_guard(args: argparse.Namespace) -> int:
    """Never fails the start: whatever goes wrong here is logged and the unit starts what `current` names."""
    try:
        print(f"flexedge update guard: {guard(Releases(args.releases))}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a broken guard must not keep the van from starting
        print(f"flexedge update guard: failed, starting current as it is: {exc!r}", flush=True)
    return Exit.OK


def _releases(args: argparse.Namespace) -> tuple[Releases, argparse.Namespace]:
    if args.releases is not None:
        return Releases(args.releases), args
    ctx = load_context(args)
    return Releases(update_settings(ctx.config, ctx.data_dir).releases_dir), args


def run_status(args: argparse.Namespace) -> int:
    releases, _ = _releases(args)
    doc = {"running_version": __version__, **releases.status()}
    pending, outcome = doc["pending"], doc["outcome"]
    emit(args, doc, "\n".join([
        f"releases   {releases.root}",
        f"current    {doc['current'] or '-'}",
        f"previous   {doc['previous'] or '-'}",
        f"pending    {json.dumps(pending) if pending else '-'}",
        f"last       {outcome['result'] + ' ' + outcome['version'] + ': ' + outcome['reason'] if outcome else '-'}",
        f"on disk    {' '.join(doc['releases']) or '-'}",
    ]))
    return Exit.OK


def run_apply(args: argparse.Namespace) -> int:
    from device.cloud_adapter import signature_check  # the fleet's signing key, as for commands

    ctx = load_context(args)
    settings = update_settings(ctx.config, ctx.data_dir)
    releases = Releases(args.releases or settings.releases_dir)
    if not ctx.config.sync.cloud_key_file:
        raise CliError("[sync] cloud_key_file is not set: no key to check the release's signature with")
    update = UpdateContext(releases, running_release_facts(__version__), signature_check(ctx.config), None,
                           settings.gate_s, settings.max_starts, margin_bytes=settings.free_margin_mb * MIB,
                           running_dir=running_release())
    try:
        switched = asyncio.run(apply_release(args.artifact, update, None, allow_downgrade=args.allow_downgrade))
    except UpdateError as exc:
        raise CliError(f"{exc.status}: {exc}", Exit.FAILED) from None
    emit(args, {"switched": switched.manifest.version, **switched.data},
         f"{switched.detail}: restart the agent (systemctl restart flexedge); its health gate decides")
    return Exit.OK
