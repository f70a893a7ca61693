"""What every subcommand shares: --config, --data-dir, --json, --log-level, and loading them."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from device.assembly import open_store
from device.config import Config, ConfigError, load_config
from device.logsetup import setup_logging
from device.paths import resolve_data_dir
from device.store import EventStore

# What each subcommand module's `register(subparsers, common)` is given.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=os.environ.get("FLEXEDGE_CONFIG"),
                        help="TOML config file (env FLEXEDGE_CONFIG)")
    common.add_argument("--data-dir", metavar="DIR", help="data directory (env FLEXEDGE_DATA_DIR)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    common.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    return common


@dataclass(frozen=True)
class Context:
    config: Config
    data_dir: Path

    def open_store(self) -> EventStore:
        return open_store(self.config, self.data_dir)


def load_context(args: argparse.Namespace) -> Context:
    """Config errors end the command with exit code 2 and the key named."""
    try:
        config = load_config(Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"flexedge: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(args.log_level or config.logging.level, config.logging.json)
    return Context(config, resolve_data_dir(args.data_dir, config.data_dir))


def emit(args: argparse.Namespace, doc: dict[str, Any], human: str) -> None:
    """JSON on stdout with --json, else the human text."""
    print(json.dumps(doc, default=str) if args.json else human)
