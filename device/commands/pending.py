"""The pending marker: a command that finishes after a restart (a new config, a new release) leaves this file in
the data directory; the next start reads it, counts the start, and the command's `Resume` gives its result.

A file rather than a store row: it is read before the agent is assembled (a change that crashes the agent at start
must still be noticed), and by whichever release or config runs next. Written atomically (temp file, fsync,
rename), so a power cut leaves the old marker or the new one.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from device.contract.files import fsync_dir, write_atomically

log = logging.getLogger(__name__)

MARKER_NAME = "command-pending.json"


class MarkerError(ValueError):
    """The marker file exists but cannot be read as a marker."""


@dataclass(frozen=True)
class PendingMarker:
    id: str  # the command's id
    name: str
    args: dict[str, Any]
    state: dict[str, Any]  # what the command's Resume needs (e.g. the previous config file)
    timeout_s: float  # how long the next start has to prove the change good
    created_at: float = field(default_factory=time.time)
    starts: int = 0  # agent starts since the change (counted before assembly)

    @staticmethod
    def path(data_dir: Path) -> Path:
        return Path(data_dir) / MARKER_NAME

    @classmethod
    def load(cls, data_dir: Path) -> PendingMarker | None:
        """The marker, or None when there is none; MarkerError for a file that is not one."""
        path = cls.path(data_dir)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise MarkerError(f"{path}: {exc}") from exc
        try:
            return cls(id=str(raw["id"]), name=str(raw["name"]), args=dict(raw["args"]), state=dict(raw["state"]),
                       timeout_s=float(raw["timeout_s"]), created_at=float(raw["created_at"]),
                       starts=int(raw["starts"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MarkerError(f"{path}: not a pending marker: {exc!r}") from exc

    def save(self, data_dir: Path) -> None:
        write_atomically(self.path(data_dir), json.dumps(asdict(self), sort_keys=True).encode(), 0o600)

    @classmethod
    def clear(cls, data_dir: Path) -> None:
        path = cls.path(data_dir)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    @classmethod
    def note_start(cls, data_dir: Path) -> PendingMarker | None:
        """Count one more start of the agent under the pending change (call before assembling the agent)."""
        try:
            marker = cls.load(data_dir)
        except MarkerError as exc:  # a torn or foreign file must not keep the agent from starting
            log.error("pending command marker unreadable, removed: %s", exc)
            cls.clear(data_dir)
            return None
        if marker is None:
            return None
        marker = replace(marker, starts=marker.starts + 1)
        marker.save(data_dir)
        log.warning("start %d under pending command %s (%s)", marker.starts, marker.name, marker.id)
        return marker

