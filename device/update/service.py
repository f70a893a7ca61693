"""What the agent does about updates while it runs: once at start, report the last attempt's outcome and, when
it runs a pending release, run the health gate: keep the release, or put the previous one back and restart
(the unit then starts the previous release). `settle()` runs this once and is awaited both by the agent's
update task and by the `update` command's resume (device/update/command.py), which answers with its result.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from device.config import Config
from device.store import EventStore, StoreError
from device.update.gate import GateResult, health_gate, pending_for_me, running_release
from device.update.layout import ROLLED_BACK, Outcome, Releases
from device.update.report import report_outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateSettings:
    releases_dir: Path
    gate_s: float = 120.0
    max_starts: int = 3
    fetch_attempts: int = 8
    free_margin_mb: int = 64


def update_settings(config: Config, data_dir: Path) -> UpdateSettings:
    section = config.update
    root = Path(section.releases_dir).expanduser() if section.releases_dir else data_dir / "releases"
    return UpdateSettings(root, section.gate_s, section.max_starts, section.fetch_attempts, section.free_margin_mb)


class UpdateService:
    def __init__(self, settings: UpdateSettings, store: EventStore, ready: asyncio.Event,
                 online: Callable[[], bool], restart: Callable[[str], None], prefix: str = sys.prefix) -> None:
        self.settings = settings
        self.releases = Releases(settings.releases_dir)
        self.store = store
        self.ready = ready
        self.online = online
        self.restart = restart
        self.prefix = prefix
        self._settled: asyncio.Task[Outcome | None] | None = None

    def settle(self) -> asyncio.Task[Outcome | None]:
        """The last attempt's outcome, after this start's gate (if any) decided; run once per process."""
        if self._settled is None:
            self._settled = asyncio.ensure_future(self._settle())
        return self._settled

    async def _settle(self) -> Outcome | None:
        await report_outcome(self.releases, self.store.append_async)
        pending = pending_for_me(self.releases, self.prefix)
        if pending is None:
            return self.releases.outcome()
        try:
            result = await health_gate(pending, self.ready, self.store.path, self.online, pending.gate_s)
        except StoreError as exc:
            result = GateResult(False, f"store check failed: {exc}")
        if result.passed:
            self.releases.mark_good(pending)
            await asyncio.to_thread(self.releases.prune)
        else:
            self.releases.roll_back(pending, result.reason)
        return await report_outcome(self.releases, self.store.append_async)

    async def run(self) -> None:
        """The agent's update task. A rollback without a command behind it (`flexedge update apply`) restarts
        here; one with a command restarts once the command's result is committed."""
        outcome = await self.settle()
        if outcome is not None and outcome.result == ROLLED_BACK and outcome.command_id is None \
                and self.rolled_back_here(outcome):
            self.restart(f"release {outcome.version} rolled back")

    def rolled_back_here(self, outcome: Outcome) -> bool:
        """This process runs the release that was just rolled back (it must make way for the previous one)."""
        return (self.releases.root / outcome.version).resolve() == running_release(self.prefix)
