"""The health gate, run inside the new agent while its release is pending: it is marked good only when the
agent reached READY, its store passes `PRAGMA quick_check`, and its cloud link is up, all within the gate's
seconds; otherwise the previous release is put back and the agent exits (the unit restarts the previous one).
An agent that never gets this far (a crash, a hang the watchdog ends) is rolled back by the guard instead.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from device.store.database import integrity_problem
from device.update.layout import Pending, Releases

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often the gate looks at the cloud link


def running_release(prefix: str = sys.prefix) -> Path:
    """The release this process runs from: the folder that holds its venv."""
    return Path(prefix).resolve().parent


def pending_for_me(releases: Releases, prefix: str = sys.prefix) -> Pending | None:
    """The pending marker, if it names the release this process runs from (a `flexedge run` started from
    anywhere else leaves it alone)."""
    pending = releases.pending()
    if pending is None or (releases.root / pending.target).resolve() != running_release(prefix):
        return None
    return pending


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str


async def health_gate(pending: Pending, ready: asyncio.Event, store_path: Path, online: Callable[[], bool],
                      gate_s: float) -> GateResult:
    try:
        async with asyncio.timeout(gate_s):
            await ready.wait()
            problem = await asyncio.to_thread(integrity_problem, store_path)
            if problem is not None:
                return GateResult(False, f"store check failed: {problem}")
            while not online():
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        what = "the cloud link is not up" if ready.is_set() else "the agent did not reach READY"
        return GateResult(False, f"{what} within {gate_s:.0f} s")
    log.info("release %s: READY, store ok, cloud link up", pending.version)
    return GateResult(True, "READY, store quick_check ok, cloud link up")
