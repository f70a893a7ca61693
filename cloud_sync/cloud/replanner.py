"""Traffic and weather move the plan: factor updates per area and time come in as JSON lines (a feed file the
operator's tooling, or the demo, appends to); each one re-plans the claimed blocks with unfinished stops in its
area and publishes their next signed route version through the dispatcher.

A line: {"area": "bridge", "lat": 47.6, "lon": -122.3, "radius_m": 800, "factor": 1.8 | "closed",
"from": ISO time?, "until": ISO time?}. A bad line is a counted, logged rejection; the feed goes on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from cloud_sync.cloud.db import CloudDb
from cloud_sync.cloud.peer import CloudPeer
from cloud_sync.cloud.planning.problem import ProblemError
from cloud_sync.cloud.planning.replan import replan, touches
from cloud_sync.cloud.planning.travel import Slowdown, Slowdowns, TravelTimes, TravelTimesError
from device.contract.domain import Route
from device.contract.travel import DAY_S, second_of_day

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the feed file is checked for new lines
MAX_LINE = 4096


class FactorError(ValueError):
    """A factor update that cannot be used."""


def parse_update(line: str) -> Slowdown:
    if len(line) > MAX_LINE:
        raise FactorError(f"line longer than {MAX_LINE}")
    try:
        doc: Any = json.loads(line)
    except ValueError as exc:
        raise FactorError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise FactorError("expected an object")
    area = doc.get("area")
    if not isinstance(area, str) or not area or len(area) > 100:
        raise FactorError("area: expected a name")
    numbers = {}
    for key, low, high in (("lat", -90, 90), ("lon", -180, 180), ("radius_m", 1, 100_000)):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise FactorError(f"{key}: expected a number in [{low}, {high}]")
        numbers[key] = float(value)
    factor = doc.get("factor")
    if factor == "closed":
        factor = math.inf
    elif isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1.0 <= factor <= 20.0:
        raise FactorError("factor: expected a number in [1, 20] or \"closed\"")
    hours = []
    for key, default in (("from", 0.0), ("until", float(DAY_S))):
        value = doc.get(key)
        if value is None:
            hours.append(default)
            continue
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise FactorError(f"{key}: not an ISO 8601 time") from exc
        hours.append(second_of_day(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)))
    start, end = hours
    if end <= start:
        end = float(DAY_S)  # runs past midnight: in force for the rest of the day
    try:
        return Slowdown(area, numbers["lat"], numbers["lon"], numbers["radius_m"], float(factor), start, end)
    except TravelTimesError as exc:
        raise FactorError(str(exc)) from exc


class Replanner:
    def __init__(self, peer: CloudPeer, db: CloudDb, base: TravelTimes, time_limit_s: float = 2.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.peer, self.db, self.base = peer, db, base
        self.time_limit_s = time_limit_s
        self.clock = clock
        self.slowdowns: dict[str, Slowdown] = {}

    @property
    def travel(self) -> Slowdowns:
        return Slowdowns(self.base, tuple(self.slowdowns.values()))

    async def apply(self, update: Slowdown) -> list[Route]:
        """Take the update (it replaces the area's last one), re-plan the blocks it touches, publish them."""
        self.slowdowns[update.area] = update
        self.peer.counters["factor_updates"] += 1
        now = self.clock()
        positions = {d["device"]: (d.get("status") or {}).get("position")
                     for d in await asyncio.to_thread(self.db.device_view)}
        published = []
        for device, route in await asyncio.to_thread(self.db.claimed_routes):
            finished = await asyncio.to_thread(self.db.finished_stops, device, route.block_id)
            if not touches(route, set(finished), [update], now):
                continue
            here = _where(route, finished, positions.get(device))
            try:
                new = await asyncio.to_thread(replan, route, set(finished), here, now, self.travel,
                                              self.time_limit_s)
            except ProblemError as exc:
                log.error("re-plan of %s failed, route kept: %s", route.block_id, exc)
                self.peer.counters["replan_failed"] += 1
                continue
            revised = await self.peer.revise_route(new)
            self.peer.counters["replans"] += 1
            log.info("%s (%s x%s): block %s re-planned, v%d sent to %s", update.area,
                     "closed" if update.closed else "slowdown", update.factor, route.block_id, revised.version,
                     device)
            published.append(revised)
        return published

    async def follow(self, path: Path) -> None:
        """Apply every line appended to `path` (created if missing), until cancelled."""
        path.touch(exist_ok=True)
        offset = 0
        while True:
            size = path.stat().st_size
            if size < offset:
                offset = 0  # truncated: read it again from the start
            if size > offset:
                with path.open("rb") as feed:
                    feed.seek(offset)
                    chunk = feed.read(size - offset)
                complete = chunk.rfind(b"\n") + 1
                offset += complete
                for raw in chunk[:complete].splitlines():
                    if raw.strip():
                        await self._line(raw.decode("utf-8", "replace"))
            await asyncio.sleep(POLL_S)

    async def _line(self, line: str) -> None:
        try:
            update = parse_update(line)
        except FactorError as exc:
            self.peer.counters["rejected.factor_update"] += 1
            log.warning("factor update rejected: %s: %.80s", exc, line)
            return
        await self.apply(update)


def _where(route: Route, finished: list[str], position: Any) -> tuple[float, float]:
    """The van's last reported fix, else its last finished stop, else its first stop."""
    if isinstance(position, dict) and isinstance(position.get("lat"), (int, float)) \
            and isinstance(position.get("lon"), (int, float)):
        return float(position["lat"]), float(position["lon"])
    by_id = {s.id: s for s in route.stops}
    stop = by_id[finished[-1]] if finished and finished[-1] in by_id else route.stops[0]
    return stop.lat, stop.lon
