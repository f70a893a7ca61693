"""The operator's one write to the dispatch state: re-offer a claimed block. The winner is cleared in one
write transaction of its own, then the dispatcher republishes the station's signed offers."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Awaitable, Callable

from device.contract.domain import Block, Route

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 30.0

Publish = Callable[[list[tuple[Block, Route]]], Awaitable[None]]


class ActionError(Exception):
    pass


def _release(path: Path, block_id: str) -> tuple[Block, Route, str | None]:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT body, route, winner FROM blocks WHERE id = ?", (block_id,)).fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            raise ActionError(f"unknown block {block_id}")
        conn.execute("UPDATE blocks SET winner = NULL, granted_at = NULL WHERE id = ?", (block_id,))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise ActionError(f"cannot release block {block_id}: {exc}") from exc
    finally:
        conn.close()
    return Block.from_dict(json.loads(row[0])), Route.from_dict(json.loads(row[1])), row[2]


def reoffer(path: Path, publish: Publish) -> Callable[[str], Awaitable[None]]:
    """The page's re-offer action bound to a cloud database and the dispatcher's `add_blocks`."""
    async def act(block_id: str) -> None:
        block, route, winner = await asyncio.to_thread(_release, path, block_id)
        await publish([(block, route)])
        log.info("block %s re-offered at %s (was won by %s)", block_id, block.station, winner)
    return act
