"""`flexedge` command line. Each subcommand lives in its own module with a `register(subparsers, common)`."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from device import __version__
from device.cli.common import common_options

log = logging.getLogger(__name__)

# One line per subcommand module; each adds its own parser.
COMMAND_MODULES = (
    "device.cli.status",
    "device.cli.outbox",
    "device.cli.config_cmd",
    "device.cli.demo",
    "device.cli.run",
    "device.cli.selftest",
    "device.cli.nmea_cmd",
    "device.cli.sim",
    "device.cli.sync",
    "device.cli.cloud",
    "device.cli.pki",
    "device.cli.vision_cmd",
    "device.cli.console_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexedge", description="Flex Edge: the delivery van and dock agent.")
    parser.add_argument("--version", action="version", version=f"flexedge {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
