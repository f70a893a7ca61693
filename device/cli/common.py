"""What every subcommand shares: --config, --data-dir, --json, --log-level, loading them, and how a command
fails: one line on stderr naming what and where, and an exit code from `Exit` (README: "Exit codes")."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, TypeAlias

from device import __version__
from device.assembly import open_store
from device.config import Config, ConfigError, load_config
from device.logsetup import setup_logging
from device.paths import SYSTEM_CONFIG, resolve_config_path, resolve_data_dir, store_path
from device.store import EventStore

# What each subcommand module's `register(subparsers, common)` is given.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Exit(IntEnum):
    """The exit codes of every `flexedge` command."""

    OK = 0
    FAILED = 1  # the command ran and found a problem (a failed self-test check, a broken hash chain, no store)
    USAGE = 2  # bad arguments or a bad config (the key, the file and the problem are named)
    BAD_INPUT = 3  # an input file the command cannot use (a photo, an NMEA log)
    MISSING = 4  # a runtime part is missing (the TFLite interpreter, the model)
    ENVIRONMENT = 5  # the machine refused: a data directory or file not there, not readable or not writable
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """Ends a command: `flexedge <command>: <message>` on stderr and the exit code."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.code = code


def common_options(defaults: bool = True) -> argparse.ArgumentParser:
    """`defaults=False`: for a command's own sub-actions, so an option given before the action
    (`pki --json init`) is not reset by the action's default."""
    common = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common.add_argument("--config", metavar="FILE", default=default(None),
                        help=f"TOML config file (default: env FLEXEDGE_CONFIG, then {SYSTEM_CONFIG} when present)")
    common.add_argument("--data-dir", metavar="DIR", default=default(None),
                        help="data directory (env FLEXEDGE_DATA_DIR)")
    common.add_argument("--json", action="store_true", default=default(False), help="machine-readable JSON on stdout")
    common.add_argument("--log-level", default=default(None), help="DEBUG, INFO, WARNING, ERROR")
    common.add_argument("--version", action="version", version=f"flexedge {__version__}")
    return common


def subcommand_options() -> argparse.ArgumentParser:
    return common_options(defaults=False)


@dataclass(frozen=True)
class Context:
    config: Config
    data_dir: Path
    config_path: Path | None = None

    @property
    def store_path(self) -> Path:
        return store_path(self.data_dir)

    def open_store(self, *, create: bool = True) -> EventStore:
        """`create=False` (read-only commands): an existing store only, never a new one in a wrong place."""
        if not create:
            self.require_data_dir()
            if not self.store_path.exists():
                raise CliError(f"no store at {self.store_path}: the agent has not run with this data directory "
                               f"(config {self.config_path or 'defaults'}; --data-dir or FLEXEDGE_DATA_DIR "
                               "to look elsewhere)", Exit.FAILED)
        return open_store(self.config, self.data_dir)

    def require_data_dir(self) -> None:
        if not self.data_dir.is_dir():
            raise CliError(f"data directory {self.data_dir} does not exist (config "
                           f"{self.config_path or 'defaults'}; is the agent installed here?)", Exit.ENVIRONMENT)


def config_path(args: argparse.Namespace) -> Path | None:
    return resolve_config_path(args.config, system_config=getattr(args, "system_config", SYSTEM_CONFIG))


def load_context(args: argparse.Namespace, *, check_files: bool = False) -> Context:
    """Config errors end the command with exit code 2 and the key named. `check_files`: the configured
    certificates, keys and model must exist and be readable (commands that use them: run, sync)."""
    path = config_path(args)
    try:
        config = load_config(path, check_files=check_files)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", Exit.USAGE) from None
    setup_logging(args.log_level or config.logging.level, config.logging.json)
    return Context(config, data_dir(args, config, path), path)


def data_dir(args: argparse.Namespace, config: Config, path: Path | None) -> Path:
    """With the installed config, the service's data directory (not the invoking user's)."""
    installed = path is not None and path == getattr(args, "system_config", SYSTEM_CONFIG)
    return resolve_data_dir(args.data_dir, config.data_dir, installed=installed)


def emit(args: argparse.Namespace, doc: dict[str, Any], human: str) -> None:
    """JSON on stdout with --json, else the human text."""
    print(json.dumps(doc, default=str) if args.json else human)


def fail(command: str, message: str) -> None:
    """One line on stderr: `flexedge <command>: <message>` (under systemd with the error priority, <3>)."""
    priority = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
    print(f"{priority}flexedge {command}: {message}".replace("\n", " "), file=sys.stderr)
