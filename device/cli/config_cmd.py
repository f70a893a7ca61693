"""`flexedge config`: print the effective configuration; `--validate` only checks it (systemd ExecStartPre)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device.cli.common import Subparsers
from device.config import ConfigError, config_to_dict, load_config
from device.paths import resolve_data_dir


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("config", parents=[common], help="print or validate the configuration")
    p.add_argument("--validate", action="store_true", help="exit 0 if valid, 2 with the bad key named if not")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"flexedge: config error: {exc}", file=sys.stderr)
        return 2
    if args.validate:
        print(f"config ok: {args.config or 'defaults'}")
        return 0
    doc = config_to_dict(config)
    doc["data_dir"] = str(resolve_data_dir(args.data_dir, config.data_dir))
    print(json.dumps(doc, indent=None if args.json else 2))
    return 0
