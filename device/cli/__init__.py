"""`flexedge` command line. Each subcommand lives in its own module with a `register(subparsers, common)`."""
from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys
from pathlib import Path

from device import __version__
from device.cli.common import CliError, Exit, common_options, fail
from device.paths import SYSTEM_CONFIG
from device.store.errors import StoreError

log = logging.getLogger(__name__)

# Each subcommand and the module that registers it (`register(subparsers, common)`). Only the module of the
# command being run is imported: `flexedge run`, what the service starts, then carries no cloud peer,
# simulators or barcode decoders (about 4 MB of resident memory). `--help` and unknown commands import all.
COMMANDS = {
    "status": "device.cli.status",
    "outbox": "device.cli.outbox",
    "config": "device.cli.config_cmd",
    "demo": "device.cli.demo",
    "run": "device.cli.run",
    "selftest": "device.cli.selftest",
    "nmea": "device.cli.nmea_cmd",
    "sim": "device.cli.sim",
    "sync": "device.cli.sync",
    "cloud": "device.cli.cloud",
    "plan": "device.cli.plan",
    "pki": "device.cli.pki",
    "check-photo": "device.cli.vision_cmd",
    "decode": "device.cli.vision_cmd",
    "console": "device.cli.console_cmd",
    "update": "device.cli.update_cmd",
}


def command_modules(argv: list[str] | None = None) -> list[str]:
    """The modules to register for this command line: the named command's, or every one."""
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if words and words[0] in COMMANDS:
        return [COMMANDS[words[0]]]
    return list(dict.fromkeys(COMMANDS.values()))


def build_parser(argv: list[str] | None = None, system_config: Path = SYSTEM_CONFIG) -> argparse.ArgumentParser:
    """`system_config`: the installed config file the commands fall back to (tests give their own)."""
    parser = argparse.ArgumentParser(prog="flexedge", description="Flex Edge: the delivery van and dock agent.")
    parser.add_argument("--version", action="version", version=f"flexedge {__version__}")
    parser.set_defaults(system_config=system_config)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for name in command_modules(argv):
        importlib.import_module(name).register(subparsers, common)
    return parser


def main(argv: list[str] | None = None, *, system_config: Path = SYSTEM_CONFIG) -> int:
    """Every error a person can cause or fix ends as one line on stderr and an `Exit` code, no traceback
    (the traceback goes to the DEBUG log)."""
    parser = build_parser(argv, system_config)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except CliError as exc:
        fail(args.command, str(exc))
        return exc.code
    except (OSError, sqlite3.Error, StoreError) as exc:
        log.debug("%s failed", args.command, exc_info=True)
        fail(args.command, f"{type(exc).__name__}: {exc}")
        return Exit.ENVIRONMENT


if __name__ == "__main__":
    sys.exit(main())
