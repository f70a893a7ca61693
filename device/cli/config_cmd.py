"""`flexedge config`: print the effective configuration; `--validate` only checks it (systemd ExecStartPre);
`--example` prints the complete commented reference config."""
from __future__ import annotations

import argparse
import json

from device.cli.common import CliError, Exit, Subparsers, config_path, data_dir
from device.config import ConfigError, config_to_dict, example_text, load_config, parse_setting


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("config", parents=[common], help="print, validate or explain the configuration")
    p.add_argument("--validate", action="store_true",
                   help="exit 0 if valid (certificate and key files included), 2 with the bad key named if not")
    p.add_argument("--user", metavar="NAME", help="with --validate: check the files are readable by this user "
                   "(e.g. flexedge, when run as root)")
    p.add_argument("--example", action="store_true", help="print every key with its default, meaning and range")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --example: this value instead of the default (a config template; repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.example:
        try:
            values = dict(parse_setting(item) for item in args.set)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        print(example_text(values), end="")
        return Exit.OK
    path = config_path(args)
    try:
        config = load_config(path, check_files=args.validate, file_user=args.user)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", Exit.USAGE) from None
    if args.validate:
        print(f"config ok: {path or 'defaults'}")
        return Exit.OK
    doc = config_to_dict(config)
    doc["data_dir"] = str(data_dir(args, config, path))
    doc["config_file"] = str(path) if path else None
    print(json.dumps(doc, indent=None if args.json else 2))
    return Exit.OK
