"""`flexedge selftest [--json]`: what a technician runs after installing a unit. Exit 0 when nothing FAILs.
The checks are in device/selftest.py."""
from __future__ import annotations

import argparse
import json
import os

from device.cli.common import Subparsers, config_path
from device.cli.common import data_dir as cli_data_dir
from device.config import ConfigError, load_config
from device.logsetup import setup_logging
from device.paths import resolve_data_dir
from device.selftest import CheckStatus, run_checks


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("selftest", parents=[common], help="check this unit: storage, clock, config, "
                              "model runtime, broker, gpsd; exit 1 on any failure")
    p.add_argument("--gpsd", metavar="HOST:PORT", default=os.environ.get("FLEXEDGE_GPSD"),
                   help="gpsd to check (env FLEXEDGE_GPSD); default: the config's gpsd_host:gpsd_port when "
                   "[gps] enabled and source = gpsd, else skipped")
    p.add_argument("--user", metavar="NAME", help="check the config's files are readable by this user "
                   "(e.g. flexedge, when run as root)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args)
    try:  # the other checks need the config's values; a missing certificate is the config check's FAIL
        config = load_config(path, check_files=False)
    except ConfigError:
        config = None
    setup_logging(args.log_level or (config.logging.level if config else "INFO"), True)
    data_dir = cli_data_dir(args, config, path) if config else resolve_data_dir(args.data_dir, "")
    results = run_checks(path, config, data_dir, args.gpsd, user=args.user)
    ok = not any(r.status is CheckStatus.FAIL for r in results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.to_dict() for r in results]}, default=str))
    else:
        for r in results:
            print(f"{r.status.value.upper():5} {r.name:9} {r.detail}")
        print("selftest: " + ("all checks passed" if ok else "FAILED"))
    return 0 if ok else 1
