"""The page's re-offer: `POST /api/blocks/{block}/reoffer` puts a claimed block back on its station's offers and
tells the van that had it (actions.py); the command it was told by is audited like one sent from the van's panel,
so its `command.result` shows there, and the block's row shows whether the van has answered (queries.py)."""
from __future__ import annotations

import asyncio
import logging

import aiomqtt
from aiohttp import web

from cloud_sync.cloud.web.actions import ActionError
from cloud_sync.cloud.web.api import APP, _error, _id, _json, _session, _station
from cloud_sync.cloud.web.commands import DESK

log = logging.getLogger(__name__)


async def reoffer(request: web.Request) -> web.Response:
    """Put a claimed block back on its station's offers (the van could not run it) and tell that van."""
    app = request.app[APP]
    block_id = _id(request, "block")
    if app.reoffer is None:
        raise _error(web.HTTPConflict, "this server does not dispatch")
    rows = await asyncio.to_thread(app.db.rows, "SELECT station FROM blocks WHERE id = ?", (block_id,))
    station = _station(request)
    if not rows or (station is not None and rows[0][0] != station):
        raise _error(web.HTTPNotFound, "no such block")
    operator = _session(request).operator
    try:
        done = await app.reoffer(block_id)
    except ActionError as exc:
        log.error("operator %s: re-offer of %s failed: %s", operator.name, block_id, exc)
        raise _error(web.HTTPServiceUnavailable, str(exc)) from None
    except aiomqtt.MqttError as exc:  # released in the database; the van and the offers not told yet
        log.error("operator %s: block %s released, but not published: %s", operator.name, block_id, exc)
        raise _error(web.HTTPServiceUnavailable, f"released, but the cloud's broker connection is down: {exc}"
                     ) from None
    told = await request.app[DESK].record(operator, done.told) if done.told is not None else None
    log.info("operator %s re-offered block %s (taken from %s)", operator.name, block_id, done.winner)
    return _json({"reoffered": block_id, "winner": done.winner, "told": told})


def install(app: web.Application) -> None:
    """The route on the page's app, behind its guard (session, CSRF on POST, Origin, Host); after
    `commands.install` (the desk audits the command)."""
    app.router.add_post("/api/blocks/{block}/reoffer", reoffer)
