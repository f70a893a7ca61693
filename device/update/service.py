"""What the agent does about updates while it runs: report the last attempt's outcome, and, when it runs a
pending release, run the health gate and keep the release or put the previous one back and exit."""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from device.store import EventStore, StoreError
from device.update.gate import GateResult, health_gate, pending_for_me
from device.update.layout import Releases
from device.update.report import report_outcome

log = logging.getLogger(__name__)

ROLLBACK_EXIT = 75  # `flexedge run` exits with this after its own rollback (EX_TEMPFAIL: the unit restarts it)


@dataclass(frozen=True)
class UpdateSettings:
    releases_dir: Path
    gate_s: float = 120.0
    max_starts: int = 3


async def watch_updates(settings: UpdateSettings, store: EventStore, ready: asyncio.Event,
                        online: Callable[[], bool], exit_with: Callable[[int], None],
                        prefix: str = sys.prefix) -> None:
    releases = Releases(settings.releases_dir)
    await report_outcome(releases, store.append_async)
    pending = pending_for_me(releases, prefix)
    if pending is None:
        return
    try:
        result = await health_gate(pending, ready, store.path, online, pending.gate_s)
    except StoreError as exc:
        result = GateResult(False, f"store check failed: {exc}")
    if result.passed:
        releases.mark_good(pending)
        await report_outcome(releases, store.append_async)
        return
    releases.roll_back(pending, result.reason)
    exit_with(ROLLBACK_EXIT)
