"""`set_config`: a partial config from the cloud, merged onto the config file, proven by the cloud link, or undone.

1. The arguments are config keys, `{"mqtt.port": 8883}` or `{"mqtt": {"port": 8883}}`, merged onto the file's
   own settings (environment overrides still apply on top, as for the technician's edits). The identity and the
   data directory are not settable remotely (`REFUSED`).
2. The merged file is validated with device/config.py's schema, files included, before anything changes: a bad
   value answers `rejected` naming the key, and the file is untouched.
3. The current file is kept as `<config>.previous`, the new one replaces it atomically, and the agent restarts
   (a pending marker names the change).
4. After the restart, the cloud link must be up within `[commands] config_confirm_s`: then the result is `ok`,
   "applied". Otherwise the previous file is put back (the refused one is kept as `<config>.rejected`), the result
   is `failed`, "rolled back", and the agent restarts on the previous config, which sends the result. A config the
   agent crashes on is rolled back by `flexedge run` before the agent is assembled, after
   `[commands] config_max_starts` starts.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from device.cloud_port import CloudCommand
from device.commands.framework import CommandContext, CommandOutcome, Deferred, Status
from device.commands.pending import PendingMarker
from device.config import ConfigError, load_config, toml_value
from device.contract.files import fsync_dir, write_atomically

log = logging.getLogger(__name__)

NAME = "set_config"
REFUSED = {
    "data_dir": "the store and the pending marker live there",
    "device.id": "the unit's identity is its certificate: provisioned, not set remotely",
    "device.fleet": "the fleet is part of every topic and of the broker's access rules: provisioned",
}
PREVIOUS_SUFFIX = ".previous"
REJECTED_SUFFIX = ".rejected"


class ChangeError(ValueError):
    """Arguments that are not a partial config."""


def flatten(args: Mapping[str, Any]) -> dict[str, Any]:
    """`{"mqtt.port": 1}` and `{"mqtt": {"port": 1}}` both as {"mqtt.port": 1}; top-level keys stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, Mapping):
            if "." in key:
                raise ChangeError(f"{key}: a section holds plain values, not another table")
            for name, item in value.items():
                if isinstance(item, Mapping):
                    raise ChangeError(f"{key}.{name}: a section holds plain values, not another table")
                flat[f"{key}.{name}"] = item
        else:
            flat[key] = value
    return flat


def merged(current: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    doc = {key: dict(value) if isinstance(value, Mapping) else value for key, value in current.items()}
    for key, value in flat.items():
        section, dot, name = key.partition(".")
        if not dot:
            doc[key] = value
            continue
        table = doc.setdefault(section, {})
        if not isinstance(table, dict):
            raise ChangeError(f"{section}: is a value in the current file, not a section")
        table[name] = value
    return doc


def toml_text(doc: Mapping[str, Any], header: str) -> str:
    """A config document (top-level values, then one table per section) as TOML."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key} = {toml_value(value)}" for key, value in doc.items() if not isinstance(value, Mapping)]
    for section, table in doc.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{section}]", *(f"{name} = {toml_value(value)}" for name, value in table.items())]
    return "\n".join(lines) + "\n"


async def set_config(command: CloudCommand, context: CommandContext) -> CommandOutcome | Deferred:
    path = context.config_path
    if path is None:
        return CommandOutcome(Status.REJECTED, "the agent runs without a config file: nothing to change")
    try:
        flat = flatten(command.args)
    except ChangeError as exc:
        return CommandOutcome(Status.REJECTED, str(exc))
    if not flat:
        return CommandOutcome(Status.REJECTED, "no settings given (args: {\"section.key\": value, ...})")
    refused = {key: REFUSED[key] for key in flat if key in REFUSED}
    if refused:
        return CommandOutcome(Status.REJECTED, "; ".join(f"{k}: {why}" for k, why in refused.items()),
                              {"refused": sorted(refused)})
    current_bytes = path.read_bytes()
    current = tomllib.loads(current_bytes.decode("utf-8"))
    try:
        doc = merged(current, flat)
    except ChangeError as exc:
        return CommandOutcome(Status.REJECTED, str(exc))
    changed = sorted(flat)
    if doc == current:
        return CommandOutcome(Status.OK, "no change: the file already has these values", {"changed": []})
    header = (f"Written by the remote command set_config {command.id} at "
              f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; the file before it: {path.name}"
              f"{PREVIOUS_SUFFIX}.\nChanged: {', '.join(changed)}.")
    candidate = path.with_name(f".{path.name}.candidate")  # beside it: relative paths resolve the same
    write_atomically(candidate, toml_text(doc, header).encode("utf-8"))  # on disk before it is renamed in
    try:
        new = load_config(candidate, check_files=True)
    except ConfigError as exc:
        candidate.unlink(missing_ok=True)
        return CommandOutcome(Status.REJECTED, f"invalid config, nothing changed: {exc.key}: {exc.problem}",
                              {"key": exc.key, "changed": changed})
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    write_atomically(previous, current_bytes)

    def apply() -> None:  # after the pending marker is on disk
        os.replace(candidate, path)
        fsync_dir(path.parent)
        log.warning("config %s changed by command %s (%s); the previous file is %s", path, command.id,
                    ", ".join(changed), previous)
    return Deferred(f"config written ({', '.join(changed)}); restarting to apply",
                    {"config": str(path), "previous": str(previous), "changed": changed,
                     "sha256": hashlib.sha256(candidate.read_bytes()).hexdigest(),
                     "max_starts": new.commands.config_max_starts},
                    new.commands.config_confirm_s, apply)


def roll_back(state: Mapping[str, Any]) -> None:
    """Put the previous config file back; keep the refused one as `<config>.rejected`."""
    config, previous = Path(state["config"]), Path(state["previous"])
    write_atomically(config.with_name(config.name + REJECTED_SUFFIX), config.read_bytes())
    write_atomically(config, previous.read_bytes())
    log.error("config %s rolled back to %s", config, previous)


async def confirm(marker: PendingMarker, context: CommandContext) -> CommandOutcome:
    """After the restart: kept if the cloud link comes up in time, else rolled back (and restarted)."""
    state = marker.state
    data = {"changed": state.get("changed", []), "starts": marker.starts}
    if hashlib.sha256(Path(state["config"]).read_bytes()).hexdigest() != state["sha256"] \
            and not state.get("rolled_back"):
        return CommandOutcome(Status.FAILED, "not applied: the agent stopped before the new file was in place",
                              {**data, "applied": False, "rolled_back": False})
    if state.get("rolled_back"):
        return CommandOutcome(Status.FAILED, f"rolled back: {state['rolled_back']}",
                              {**data, "applied": False, "rolled_back": True})
    began = time.monotonic()
    if await context.wait_online(marker.timeout_s):
        return CommandOutcome(Status.OK, f"applied: the cloud link came up {time.monotonic() - began:.1f} s after "
                              "the restart", {**data, "applied": True, "rolled_back": False})
    roll_back(state)
    return CommandOutcome(Status.FAILED, f"rolled back: the cloud link did not come up within "
                          f"{marker.timeout_s:.0f} s of the restart", {**data, "applied": False, "rolled_back": True},
                          restart=True)


def recover_before_start(marker: PendingMarker, data_dir: Path) -> bool:
    """`flexedge run`, before assembling: a config the agent started with `max_starts` times without confirming it
    (it crashed, or was stopped) is rolled back now. True when the config file was changed."""
    state = marker.state
    if marker.name != NAME or state.get("rolled_back") or marker.starts <= int(state.get("max_starts", 3)):
        return False
    roll_back(state)
    reason = f"the agent started {marker.starts - 1} times with it without confirming it"
    replace(marker, state={**state, "rolled_back": reason}).save(data_dir)
    return True
