"""The operator's one write to the dispatch state: re-offer a claimed block. The winner is cleared in one
write transaction of its own (through the cloud's engine: SQLite or PostgreSQL), then the dispatcher
republishes the station's signed offers."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Awaitable, Callable

from cloud_sync.cloud.engine import CloudDbError, open_engine
from device.contract.domain import Block, Route

log = logging.getLogger(__name__)

Publish = Callable[[list[tuple[Block, Route]]], Awaitable[None]]


class ActionError(Exception):
    pass


def _release(target: Path | str, block_id: str) -> tuple[Block, Route, str | None]:
    """One write transaction through the cloud's engine (a connection of its own: the action is rare)."""
    try:
        engine = open_engine(target)
    except CloudDbError as exc:
        raise ActionError(f"cannot release block {block_id}: {exc}") from exc
    try:
        with engine.transaction() as tx:
            row = tx.execute(f"SELECT body, route, winner FROM blocks WHERE id = ?{tx.dialect.for_update}",
                             (block_id,)).fetchone()
            if row is None:
                raise ActionError(f"unknown block {block_id}")
            tx.execute("UPDATE blocks SET winner = NULL, granted_at = NULL WHERE id = ?", (block_id,))
    except CloudDbError as exc:
        raise ActionError(f"cannot release block {block_id}: {exc}") from exc
    finally:
        engine.close()
    return Block.from_dict(json.loads(row[0])), Route.from_dict(json.loads(row[1])), row[2]


def reoffer(target: Path | str, publish: Publish) -> Callable[[str], Awaitable[None]]:
    """The page's re-offer action bound to a cloud database and the dispatcher's `add_blocks`."""
    async def act(block_id: str) -> None:
        block, route, winner = await asyncio.to_thread(_release, target, block_id)
        await publish([(block, route)])
        log.info("block %s re-offered at %s (was won by %s)", block_id, block.station, winner)
    return act
