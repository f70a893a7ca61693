"""The releases folder and its switch: `<root>/<version>/` per release (its files and its own `venv/`),
`current` and `previous` symlinks, the pending marker of a switch not yet proven good, and the outcome of the
last attempt (reported as events by the next agent that starts, device/update/report.py).

The unit starts `<root>/current/venv/bin/flexedge run`; the first release is the installer's venv
(`current -> /opt/flexedge`). A switch renames a new symlink over `current` (rename(2) is atomic: the unit
sees the old release or the new one, never neither); the pending marker is written before it, so a power cut
at any point leaves a state the guard understands.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from device.contract.domain import new_event_id
from device.contract.files import fsync_dir, write_atomically

log = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
PENDING = "pending.json"
OUTCOME = "outcome.json"
APPLIED = "applied"
ROLLED_BACK = "rolled_back"
T = TypeVar("T", "Pending", "Outcome")
START_ALLOWANCE_S = 60.0  # on top of the gate's seconds per start: interpreter start, migrations, restart delay


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """The old file or the new one after a power cut (device/contract/files.py)."""
    write_atomically(path, json.dumps(doc, indent=1, sort_keys=True).encode(), 0o640)


def _known(kind: type[Any], doc: dict[str, Any]) -> dict[str, Any]:
    """The fields this release knows: the guard (the installer's code, never updated) must read markers that
    newer releases write, so keys it does not know are ignored, not an error."""
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in doc.items() if k in names}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s unreadable (%s): treated as absent", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class Pending:
    """A switch made and not yet proven good. `starts` counts the unit's starts of it (the guard's counter)."""

    version: str
    target: str  # what `current` points at now
    previous_version: str
    previous_target: str  # what `current` pointed at before, and is put back on a rollback
    command_id: str | None
    switched_at: float
    gate_s: float
    max_starts: int
    starts: int = 0
    earlier_previous: str | None = None  # what `previous` pointed at before, put back with a rollback

    @property
    def deadline(self) -> float:
        """After this the release has had every chance: the guard rolls back at the next start."""
        return self.switched_at + self.max_starts * (self.gate_s + START_ALLOWANCE_S)


@dataclass(frozen=True)
class Outcome:
    """The end of the last attempt, reported as an event by the agent that runs next (the event id is chosen
    when the outcome is written: a report repeated after a crash is refused by the store's unique ids). It stays
    until the next attempt, so the `update` command's resume finds it after any number of restarts."""

    result: str  # APPLIED or ROLLED_BACK
    version: str
    previous_version: str
    command_id: str | None
    reason: str
    at: float
    event_id: str = field(default_factory=new_event_id)
    reported: bool = False  # its event is committed


def _load(kind: type[T], path: Path) -> T | None:
    """A marker file as its dataclass; one that is unreadable or lacks a field is logged and removed."""
    doc = _read_json(path)
    if doc is None:
        return None
    try:
        return kind(**_known(kind, doc))
    except TypeError as exc:
        log.error("%s has an unknown shape (%s): removed", path, exc)
        path.unlink(missing_ok=True)
        return None


class Releases:
    """The releases folder of one unit (`[update] releases_dir`, default /var/lib/flexedge/releases)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def release_dir(self, version: str) -> Path:
        return self.root / version

    @property
    def pending_file(self) -> Path:
        return self.root / PENDING

    @property
    def outcome_file(self) -> Path:
        return self.root / OUTCOME

    def link(self, name: str) -> str | None:
        """What a symlink (`current`, `previous`) names, as written."""
        try:
            return os.readlink(self.root / name)
        except FileNotFoundError:
            return None

    def resolved(self, name: str) -> Path | None:
        target = self.link(name)
        return (self.root / target).resolve() if target is not None else None

    def init(self, base: Path) -> bool:
        """The first release is the installer's: `current -> base` unless a `current` exists already."""
        self.root.mkdir(mode=0o750, parents=True, exist_ok=True)
        if self.link(CURRENT) is not None:
            return False
        self._point(CURRENT, str(base))
        return True

    def _point(self, name: str, target: str) -> None:
        tmp = self.root / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, self.root / name)
        fsync_dir(self.root)

    def pending(self) -> Pending | None:
        return _load(Pending, self.pending_file)

    def outcome(self) -> Outcome | None:
        return _load(Outcome, self.outcome_file)

    def switch(self, version: str, previous_version: str, command_id: str | None, *, gate_s: float,
               max_starts: int) -> Pending:
        """Make `<root>/<version>` current, the current one previous, with a pending marker first."""
        old = self.link(CURRENT)
        if old is None:
            raise FileNotFoundError(f"{self.root / CURRENT} missing: the releases folder was never set up")
        pending = Pending(version, version, previous_version, old, command_id, time.time(), gate_s, max_starts,
                          earlier_previous=self.link(PREVIOUS))
        _write_json(self.pending_file, asdict(pending))
        self._point(PREVIOUS, old)
        self._point(CURRENT, version)
        log.warning("switched to release %s (previous %s at %s); pending until its health gate passes",
                    version, previous_version, old)
        return pending

    def count_start(self, pending: Pending) -> Pending:
        counted = replace(pending, starts=pending.starts + 1)
        _write_json(self.pending_file, asdict(counted))
        return counted

    def _finish(self, pending: Pending, result: str, reason: str) -> Outcome:
        outcome = Outcome(result, pending.version, pending.previous_version, pending.command_id, reason, time.time())
        _write_json(self.outcome_file, asdict(outcome))
        self.pending_file.unlink(missing_ok=True)
        fsync_dir(self.root)
        return outcome

    def mark_good(self, pending: Pending) -> Outcome:
        log.warning("release %s passed its health gate: kept", pending.version)
        return self._finish(pending, APPLIED, "health gate passed")

    def roll_back(self, pending: Pending, reason: str) -> Outcome:
        """Put the previous release back as `current`; the failed one stays on disk for a look."""
        if self.resolved(CURRENT) == (self.root / pending.target).resolve():
            self._point(CURRENT, pending.previous_target)
            if pending.earlier_previous is not None:
                self._point(PREVIOUS, pending.earlier_previous)
        log.error("release %s rolled back to %s: %s", pending.version, pending.previous_version, reason)
        return self._finish(pending, ROLLED_BACK, reason)

    def prune(self, also_keep: Path | None = None) -> list[str]:
        """Remove every release that is neither current nor previous nor `also_keep` (the running one), after a
        good update and before the next one (a failed one is kept until then, for a look): a release's venv is
        ~280 MB, a Pi's card is small."""
        keep = {self.resolved(CURRENT), self.resolved(PREVIOUS), also_keep.resolve() if also_keep else None}
        removed = []
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".") \
                    and folder.resolve() not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        if removed:
            log.info("old releases removed: %s", ", ".join(removed))
        return removed

    def note_reported(self, outcome: Outcome) -> None:
        _write_json(self.outcome_file, asdict(replace(outcome, reported=True)))

    def status(self) -> dict[str, Any]:
        pending, outcome = self.pending(), self.outcome()
        return {"root": str(self.root), CURRENT: self.link(CURRENT), PREVIOUS: self.link(PREVIOUS),
                "pending": asdict(pending) if pending else None, "outcome": asdict(outcome) if outcome else None,
                "releases": sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                                   and not p.name.startswith(".")) if self.root.is_dir() else []}
