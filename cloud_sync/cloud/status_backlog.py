"""Statuses waiting for the database, the newest per van: a van's newer status takes the place of its older one
that is not stored yet. The backlog is bounded by the number of vans, however fast one of them publishes (a
hostile van with a valid certificate can only publish on its own status topic)."""
from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

M = TypeVar("M")


class NewestPerTopic(Generic[M]):
    """`put(topic, message)` from the receiving loop, `await get()` from the storing task. A superseded message
    keeps its topic's place in line, so a van that publishes often is not pushed back behind the others."""

    def __init__(self) -> None:
        self._waiting: dict[str, M] = {}
        self._wake = asyncio.Event()

    def put(self, topic: str, message: M) -> bool:
        """True when `message` superseded one of its topic still waiting."""
        superseded = topic in self._waiting
        self._waiting[topic] = message
        self._wake.set()
        return superseded

    async def get(self) -> tuple[str, M]:
        while not self._waiting:
            self._wake.clear()
            await self._wake.wait()
        topic = next(iter(self._waiting))
        return topic, self._waiting.pop(topic)

    def __len__(self) -> int:
        return len(self._waiting)
