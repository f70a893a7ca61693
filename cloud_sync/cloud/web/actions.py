"""The operator's one write to the dispatch state: re-offer a claimed block.

In one write transaction of its own (through the cloud's engine: SQLite or PostgreSQL) the winner is cleared, the
block's route version is raised (the next winner, the same van included, gets a route newer than any it kept) and
the withdrawal is recorded with the id of the command that tells the old winner. Then the old winner is sent a
signed `withdraw_block {"block": id}` (idempotent by its id, expiring, for that van only, as every command is) and
the dispatcher republishes the station's signed offers. The van's `command.result` says what it did; its events
about the block stay as they were stored.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

from cloud_sync.cloud.commands import DEFAULT_TTL_S
from cloud_sync.cloud.engine import CloudDbError, open_engine
from cloud_sync.messages import Command
from device.contract.domain import Block, Route, new_event_id

log = logging.getLogger(__name__)

WITHDRAW = "withdraw_block"  # the command the old winner is sent (device/commands/withdraw.py answers it)

Publish = Callable[[list[tuple[Block, Route]]], Awaitable[None]]
Tell = Callable[[Command], Awaitable[None]]  # the dispatcher's publish of a built command


class ActionError(Exception):
    pass


@dataclass(frozen=True)
class Reoffered:
    block: str
    station: str
    winner: str | None  # the van it was taken from (None: it was not claimed)
    told: Command | None  # the withdraw_block command sent to that van


def withdraw_command(command_id: str, device: str, block_id: str, expires_at: datetime) -> Command:
    return Command(command_id, device, WITHDRAW, {"block": block_id}, expires_at)


def _release(target: Path | str, block_id: str, ttl_s: float) -> tuple[Block, Route, Command | None]:
    """One write transaction through the cloud's engine (a connection of its own: the action is rare)."""
    now = time.time()
    command_id, expires_at = new_event_id(), datetime.now(timezone.utc) + timedelta(seconds=ttl_s)
    try:
        engine = open_engine(target)
    except CloudDbError as exc:
        raise ActionError(f"cannot release block {block_id}: {exc}") from exc
    try:
        with engine.transaction() as tx:
            row = tx.execute(f"SELECT body, route, winner, station FROM blocks WHERE id = ?{tx.dialect.for_update}",
                             (block_id,)).fetchone()
            if row is None:
                raise ActionError(f"unknown block {block_id}")
            route, winner = Route.from_dict(json.loads(row[1])), row[2]
            if winner is not None:
                route = dataclasses.replace(route, version=route.version + 1)
                tx.execute("UPDATE blocks SET winner = NULL, granted_at = NULL, route = ?, route_version = ? "
                           "WHERE id = ?", (json.dumps(route.to_dict()), route.version, block_id))
                tx.execute("INSERT INTO block_withdrawals (command_id, block, device, station, at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (command_id, block_id, winner, row[3], now, expires_at.timestamp()))
    except CloudDbError as exc:
        raise ActionError(f"cannot release block {block_id}: {exc}") from exc
    finally:
        engine.close()
    told = withdraw_command(command_id, winner, block_id, expires_at) if winner is not None else None
    return Block.from_dict(json.loads(row[0])), route, told


def reoffer(target: Path | str, publish: Publish, tell: Tell, ttl_s: float = DEFAULT_TTL_S
            ) -> Callable[[str], Awaitable[Reoffered]]:
    """The page's re-offer action bound to a cloud database, the dispatcher's `add_blocks` and its command
    publish. The old winner is told before the offers go out, so it hears first. Raises ActionError (no such
    block, the database) and aiomqtt.MqttError (the broker: the release is committed, the rest not sent)."""
    async def act(block_id: str) -> Reoffered:
        block, route, told = await asyncio.to_thread(_release, target, block_id, ttl_s)
        if told is not None:
            await tell(told)
        await publish([(block, route)])
        log.info("block %s re-offered at %s (was won by %s%s)", block_id, block.station,
                 told.device if told else "nobody", f", told by command {told.id}" if told else "")
        return Reoffered(block_id, block.station, told.device if told else None, told)
    return act
