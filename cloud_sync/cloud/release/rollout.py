"""Roll a release out a few vans at a time: a canary wave first, then waves of `batch` vans; each van gets a
signed `update` command and the wave waits for every van's `command.result` as the cloud stored it. The rollout
stops after a wave in which a van failed (rolled back, or could not install) or did not answer in time: the
rest of the fleet keeps its release until the operator looks. A van that refuses (`rejected`: already on that
version, a store it could not come back from) is reported and does not stop the rollout.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

STOPPING = ("failed", "timeout")


@dataclass(frozen=True)
class VanResult:
    device: str
    command_id: str
    status: str  # ok | failed | rejected | timeout
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RolloutReport:
    version: str
    waves: list[list[str]]
    results: list[VanResult] = field(default_factory=list)
    stopped: str | None = None  # why the rollout stopped early
    not_reached: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(r.status == "ok" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "waves": self.waves, "stopped": self.stopped, "ok": self.ok,
                "not_reached": self.not_reached,
                "results": [{"device": r.device, "command_id": r.command_id, "status": r.status, "detail": r.detail,
                             "data": dict(r.data)} for r in self.results]}


def waves(devices: list[str], canary: int, batch: int) -> list[list[str]]:
    """The canary wave (its first `canary` vans), then `batch` at a time."""
    unique = list(dict.fromkeys(devices))
    head, rest = unique[:max(canary, 1)], unique[max(canary, 1):]
    return [head] + [rest[i:i + batch] for i in range(0, len(rest), max(batch, 1))] if unique else []


# send(device) -> command id (published); wait(device, command id) -> the stored result or None (timeout)
Send = Callable[[str], Awaitable[str]]
Wait = Callable[[str, str], Awaitable[VanResult | None]]


async def roll_out(version: str, devices: list[str], send: Send, wait: Wait, *, canary: int = 1, batch: int = 5,
                   on_result: Callable[[int, VanResult], None] | None = None) -> RolloutReport:
    plan = waves(devices, canary, batch)
    report = RolloutReport(version, plan)
    for number, wave in enumerate(plan):
        ids = {device: await send(device) for device in wave}
        log.info("wave %d (%s): update %s sent to %s", number, "canary" if number == 0 else "batch", version,
                 ", ".join(wave))
        answers = await asyncio.gather(*(wait(device, ids[device]) for device in wave))
        for device, answer in zip(wave, answers):
            result = answer or VanResult(device, ids[device], "timeout", "no command.result in time")
            report.results.append(result)
            if on_result is not None:
                on_result(number, result)
        bad = [r for r in report.results[-len(wave):] if r.status in STOPPING]
        if bad:
            report.stopped = (f"wave {number}: " + "; ".join(f"{r.device} {r.status}: {r.detail}" for r in bad))
            report.not_reached = [d for later in plan[number + 1:] for d in later]
            log.error("rollout of %s stopped: %s", version, report.stopped)
            break
    return report
