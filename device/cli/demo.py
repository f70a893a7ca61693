"""`flexedge demo`: the whole system on one machine, no hardware (see device/demo/orchestrator.py)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from device.cli.common import Subparsers
from device.logsetup import setup_logging


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("demo", parents=[common],
                              help="the whole system end to end: broker, cloud, agents, simulated hardware")
    p.add_argument("--duration", type=float, default=90.0, help="stop after this many seconds at the latest")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--agents", type=int, default=3, help="agents racing for the blocks")
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--stops", type=int, default=4, help="stops per block")
    p.add_argument("--report", metavar="FILE", help="write the report JSON here")
    p.add_argument("--http", metavar="HOST:PORT", type=_address,
                   help="serve the operator page over the demo's cloud while it runs (plain HTTP: keep it on "
                        "loopback; an account is made and its password printed)")
    # --data-dir DIR (common option): the demo's files go there and stay: agents' stores, the cloud's database
    # (cloud.db) and its photo files (cloud-photos/), logs.
    p.set_defaults(func=run)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT (PORT 0: any free port)")
    return host.strip("[]"), int(port)


def _print_report(report: dict[str, Any]) -> None:
    print("\n== report")
    for key in ("blocks_offered", "blocks_claimed", "blocks_completed", "stops_delivered", "packages_delivered",
                "exceptions", "photo_checks", "wrong_package_caught", "wrong_house_caught", "events_produced",
                "events_stored", "pending_in_outboxes", "lost", "duplicates", "chain_flags", "photos_taken",
                "photos_in_cloud", "photo_sha_mismatch", "upload_bytes_mean", "mcu_commands", "seconds"):
        print(f"{key:22} {report[key]}")
    for summary in report["summaries"]:
        print(f"block {summary['block_id']}: {summary['stops']} stops, {summary['delivered']}/{summary['packages']}"
              f" delivered, {summary['exceptions']} exceptions, photo checks {summary['photo_checks']}")


def run(args: argparse.Namespace) -> int:
    from cloud_sync.cloud.web.server import OperatorServerError
    from device.demo.orchestrator import Demo  # heavy imports only for this command

    setup_logging(args.log_level or "WARNING", json_lines=True)
    logging.getLogger("firmware_bridge").setLevel(logging.ERROR)  # the simulators' link chatter at shutdown
    workdir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="flexedge-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    progress_to = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the report only
    print(f"flexedge demo: seed {args.seed}, {args.agents} agents, {args.blocks} blocks; files in {workdir}",
          file=progress_to, flush=True)
    demo = Demo(workdir, seed=args.seed, duration_s=args.duration, agents=args.agents, blocks=args.blocks,
                stops=args.stops, progress=lambda line: print(line, file=progress_to, flush=True), http=args.http)
    try:
        report = asyncio.run(demo.run())
    except OperatorServerError as exc:  # --http: the address is taken or not this machine's
        print(f"flexedge demo: {exc}", file=sys.stderr)
        return 2
    report["workdir"] = str(workdir)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    ok = (report["blocks_completed"] == report["blocks_claimed"] > 0 and report["lost"] == 0
          and report["duplicates"] == 0 and report["wrong_package_caught"] > 0 and report["wrong_house_caught"] > 0
          and report["photos_in_cloud"] == report["photos_taken"] > 0 and report["photo_sha_mismatch"] == 0)
    return 0 if ok else 1
