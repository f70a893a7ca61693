"""A simulated driver for the demo and bench tests: reads the agent's notices and acts as a person would.

It uses only the agent's public inputs (the same ones the console and CLI use): it claims an offered block,
says loading is done when the load list is full, takes the proof photo on arrival (and retakes when the
house number is wrong or unreadable), signs where a signature is required, and reports an exception where a
package's note says the place cannot be reached.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Mapping

from device.agent import Agent
from device.workflow import (
    ClaimRequested,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    Notice,
    NoticeKind,
    SignatureCaptured,
    VehicleState,
)

log = logging.getLogger(__name__)

UNREACHABLE_NOTE_WORDS = ("locked", "no access")  # a package note with these makes the driver give up


@dataclass(frozen=True)
class DriverSettings:
    claim_delay_s: tuple[float, float] = (0.0, 0.3)  # think time before claiming: drivers race
    max_photo_attempts: int = 3
    seed: int = 0


class SimulatedDriver:
    def __init__(self, agent: Agent, settings: DriverSettings = DriverSettings()) -> None:
        self.agent = agent
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._notices = agent.subscribe()
        self._photo_attempts: dict[str, int] = {}
        self._claimed_or_lost: set[str] = set()
        self._claiming = False

    async def run(self) -> None:
        while True:
            notice = await self._notices.get()
            try:
                await self._react(notice)
            except Exception:  # a driver error is a demo bug, not an agent failure: log and go on
                log.exception("simulated driver failed on notice %s", notice.kind.value)

    async def _react(self, notice: Notice) -> None:
        kind, data = notice.kind, notice.data
        if kind is NoticeKind.OFFERS:
            await self._maybe_claim([b["id"] for b in data.get("blocks", [])])
        elif kind is NoticeKind.CLAIM and data.get("state") in ("won", "lost"):
            self._claiming = False
            self._claimed_or_lost.add(data["block"])
            vehicle = self._vehicle()
            if data["state"] == "lost" and vehicle is not None:
                await self._maybe_claim(sorted(vehicle.offers))
        elif kind is NoticeKind.LOAD_PROGRESS and data.get("loaded") == data.get("total"):
            await self.agent.submit(LoadingDone())
        elif kind is NoticeKind.STOP_INSTRUCTIONS:
            await self._at_stop(data)
        elif kind is NoticeKind.RETAKE_PHOTO:
            await self._photo(self._current_stop())
        elif kind is NoticeKind.SIGNATURE_NEEDED and (stop_id := self._current_stop()) is not None:
            strokes = (((10.0, 40.0), (30.0, 10.0), (50.0, 40.0)), ((15.0, 30.0), (45.0, 30.0)))
            await self.agent.submit(SignatureCaptured(stop_id, tuple(data.get("packages", ())), strokes))

    def _vehicle(self) -> VehicleState | None:
        """The van's workflow state (a dock agent has none: the simulated driver drives vans)."""
        state = self.agent.runner.workflow.state
        return state if isinstance(state, VehicleState) else None

    def _current_stop(self) -> str | None:
        vehicle = self._vehicle()
        return vehicle.current_stop if vehicle is not None else None

    async def _maybe_claim(self, block_ids: list[str]) -> None:
        phase = str(self.agent.runner.workflow.phase)
        candidates = [b for b in block_ids if b not in self._claimed_or_lost]
        if self._claiming or not candidates or phase not in ("offered", "idle"):
            return
        self._claiming = True
        await asyncio.sleep(self._rng.uniform(*self.settings.claim_delay_s))
        outcome = await self.agent.submit(ClaimRequested(self._rng.choice(candidates)))
        if not outcome.accepted:
            self._claiming = False

    async def _at_stop(self, data: Mapping[str, Any]) -> None:
        stop_id = data["stop"]["id"]
        unreachable = [p["id"] for p in data.get("packages", [])
                       if any(w in (p.get("note") or "").lower() for w in UNREACHABLE_NOTE_WORDS)]
        if unreachable:
            await self.agent.submit(ExceptionReported(stop_id, ExceptionReason.NO_ACCESS, tuple(unreachable),
                                                      "gate locked"))
        if len(unreachable) < len(data.get("packages", [])):
            await self._photo(stop_id)

    async def _photo(self, stop_id: str | None) -> None:
        if stop_id is None:
            return
        attempts = self._photo_attempts.get(stop_id, 0) + 1
        self._photo_attempts[stop_id] = attempts
        if attempts > self.settings.max_photo_attempts:
            await self.agent.submit(ExceptionReported(stop_id, ExceptionReason.NO_ACCESS, (),
                                                      "house number could not be confirmed"))
            return
        await self.agent.photo(stop_id)
