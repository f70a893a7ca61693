"""The operator page's remote commands: send a van a command from its panel, see who sent what and the van's
`command.result` live.

Who may send what (checked here, on the server; the page only hides what would be refused):
- a fleet operator: every command of CATALOGUE to any van;
- a station manager: `selftest`, `upload_logs` and `restart` to the vans of their own station (those that won
  a block there, as everywhere on the page); `set_config` and `update` are fleet operators' only. A van of
  another station is "no such van" (404), as its other pages are.

A command goes out through the cloud process's own dispatcher connection (`CloudPeer.send_command`: signed with
the fleet key, `commands.publish`), never a second connection of the cloud identity. Every send is audited: a
log line and a JSON line in the audit file (operator, time, van, command, arguments, id); results are read from
the stored `command.result` events. Every refusal is a 4xx with `{"error": ...}`, logged and counted by reason
in `CommandDesk.counters`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import aiomqtt
from aiohttp import web

from cloud_sync.cloud.commands import DEFAULT_TTL_S, RESULTS_SQL, command_args, result_of
from cloud_sync.cloud.db import is_blob
from cloud_sync.cloud.web import photos, queries
from cloud_sync.cloud.web.accounts import Operator, Role
from cloud_sync.cloud.web.api import HEADERS, ID, _error, _id, _json, _session, _station
from cloud_sync.cloud.web.live import LiveViews, stream
from cloud_sync.cloud.web.readonly import ReadOnlyDb
from cloud_sync.messages import Command

log = logging.getLogger(__name__)

HISTORY = 20  # commands shown per van (the newest)
MAX_PAIRS = 32  # KEY=VALUE lines of one command
KEY = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+$")  # set_config: section.key
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
MAX_SINCE_S = 30 * 86400  # upload_logs: how far back one may ask

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Command]]  # device, name, args, ttl -> sent


class Refused(StrEnum):
    """Why the page refused a command (the counters' keys)."""

    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    NOT_ALLOWED = "not_allowed"  # a station manager's overreach: a fleet operators' command
    NO_SUCH_VAN = "no_such_van"  # unknown, or of another station for a station manager
    NOT_DISPATCHING = "not_dispatching"  # an ingest-only process
    BROKER_DOWN = "broker_down"


class CommandRefused(Exception):
    def __init__(self, reason: Refused, status: type[web.HTTPException], message: str) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


def _bad(message: str) -> CommandRefused:
    return CommandRefused(Refused.BAD_ARGS, web.HTTPBadRequest, message)


def _no_args(args: Mapping[str, Any]) -> None:
    if args:
        raise _bad(f"takes no arguments, got {', '.join(sorted(args))[:100]}")


def _since(args: Mapping[str, Any]) -> None:
    extra = set(args) - {"since", "since_s"}
    if extra or len(args) > 1:
        raise _bad("upload_logs takes since (ISO 8601) or since_s (seconds), one of them")
    if "since" in args and not (isinstance(args["since"], str) and ISO.match(args["since"])):
        raise _bad("since: expected an ISO 8601 time such as 2026-11-29T06:00:00Z")
    since_s = args.get("since_s", 1)
    if isinstance(since_s, bool) or not isinstance(since_s, (int, float)) or not 0 < since_s <= MAX_SINCE_S:
        raise _bad(f"since_s: expected seconds, 1 to {MAX_SINCE_S}")


def _config_keys(args: Mapping[str, Any]) -> None:
    if not args:
        raise _bad("set_config needs at least one section.key=value")
    for key in args:
        if not KEY.match(key):
            raise _bad(f"{key[:60]!r}: expected section.key (the van checks the value against its schema)")


def _any(args: Mapping[str, Any]) -> None:
    """The van checks these arguments itself."""


@dataclass(frozen=True)
class Kind:
    check: Callable[[Mapping[str, Any]], None]  # raises CommandRefused (bad args)
    managers: bool  # a station manager may send it to their station's vans


CATALOGUE: dict[str, Kind] = {
    "selftest": Kind(_no_args, managers=True),
    "upload_logs": Kind(_since, managers=True),
    "restart": Kind(_no_args, managers=True),
    "set_config": Kind(_config_keys, managers=False),
    "update": Kind(_any, managers=False),
}


def may_send(operator: Operator, name: str) -> bool:
    """The command rule by role (the van's station is checked against the manager's scope separately)."""
    return operator.role is Role.OPERATOR or (name in CATALOGUE and CATALOGUE[name].managers)


def parse(doc: Any) -> tuple[str, dict[str, Any]]:
    """`{"name": ..., "pairs": ["KEY=VALUE", ...]}` (the page's form) or `{"name": ..., "args": {...}}`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise _bad("expected {name, pairs: [KEY=VALUE, ...]} or {name, args: {...}}")
    name = doc["name"]
    if name not in CATALOGUE:
        raise CommandRefused(Refused.UNKNOWN_COMMAND, web.HTTPBadRequest,
                             f"unknown command {name[:40]!r}: one of {', '.join(CATALOGUE)}")
    pairs, args = doc.get("pairs", []), doc.get("args", {})
    if not isinstance(pairs, list) or len(pairs) > MAX_PAIRS or not all(isinstance(p, str) for p in pairs):
        raise _bad(f"pairs: a list of up to {MAX_PAIRS} KEY=VALUE texts")
    if not isinstance(args, dict):
        raise _bad("args: expected an object")
    try:
        merged = {**args, **command_args([p for p in pairs if p.strip()])}
    except ValueError as exc:
        raise _bad(str(exc)) from None
    CATALOGUE[name].check(merged)
    return name, merged


class AuditLog:
    """Who sent what: one JSON line per command in a file of its own (appended, never rewritten); the newest
    HISTORY of each van kept in memory for the page."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        try:
            lines = path.read_text().splitlines() if path.exists() else []
        except OSError as exc:
            raise OSError(f"command audit {path}: {exc}") from exc
        for line in lines:
            try:
                self._keep(json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.warning("command audit %s: a line that is not a record skipped", path)

    def _keep(self, record: dict[str, Any]) -> None:
        self._recent.setdefault(str(record["device"]), deque(maxlen=HISTORY)).append(record)

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            self._keep(record)

    def of(self, device: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent.get(device, ()))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def history(db: ReadOnlyDb, audit: AuditLog, device: str, now: float) -> dict[str, Any]:
    """The van's newest commands, newest first: the audited ones (who, when) with their result when the cloud
    stored it, and results of commands sent another way (`flexedge cloud command`)."""
    results = {r.id: r for r in (result_of(device, seq, body)
                                 for seq, body in db.rows(RESULTS_SQL, (device, HISTORY)))}
    checks = photos.received(db, device) if any("blob_id" in r.data for r in results.values()) else {}
    items = []
    for record in reversed(audit.of(device)):
        items.append({**record, **_answer(results.pop(record["id"], None), record, checks, now)})
    for result in results.values():
        items.append({"id": result.id, "device": device, "name": result.name, "operator": None, "sent_at": None,
                      "args": None, **_answer(result, None, checks, now)})
    items.sort(key=lambda item: item.get("sent_at") or item.get("answered_at") or "", reverse=True)
    return {"device": device, "commands": items[:HISTORY], "now": now}


def _answer(result: Any, record: Mapping[str, Any] | None, checks: Mapping[str, str], now: float
            ) -> dict[str, Any]:
    if result is None:
        expired = record is not None and record["expires_at"] < _iso(now)
        return {"status": "expired" if expired else "sent", "detail": "", "data": {}, "answered_at": None,
                "blob": None}
    blob_id = result.data.get("blob_id")
    blob = None
    if isinstance(blob_id, str) and is_blob(blob_id) and ID.match(blob_id):
        blob = {"id": blob_id, "check": checks.get(blob_id), "size": result.data.get("size")}
    return {"status": result.status, "detail": result.detail, "data": result.data, "answered_at": result.ts,
            "blob": blob}


@dataclass
class CommandDesk:
    db: ReadOnlyDb
    audit: AuditLog
    send: Send | None  # None: an ingest-only process cannot send
    interval_s: float = 2.0
    ttl_s: float = DEFAULT_TTL_S
    counters: Counter[str] = field(default_factory=Counter)
    live: LiveViews[str] = field(init=False)

    def __post_init__(self) -> None:
        self.live = LiveViews(lambda device: history(self.db, self.audit, device, time.time()), self.interval_s)

    def refuse(self, operator: Operator, device: str, exc: CommandRefused) -> web.HTTPException:
        self.counters["refused"] += 1
        self.counters[f"refused.{exc.reason.value}"] += 1
        log.warning("operator %s: command to %s refused (%s): %s", operator.name, device[:40], exc.reason.value,
                    exc)
        return _error(exc.status, str(exc))

    async def submit(self, operator: Operator, device: str, doc: Any) -> dict[str, Any]:
        name, args = parse(doc)
        if not may_send(operator, name):
            raise CommandRefused(Refused.NOT_ALLOWED, web.HTTPForbidden,
                                 f"{name} is for fleet operators; a station manager may send "
                                 f"{', '.join(n for n, k in CATALOGUE.items() if k.managers)}")
        if not await asyncio.to_thread(queries.visible, self.db, device, operator.station):
            raise CommandRefused(Refused.NO_SUCH_VAN, web.HTTPNotFound, "no such van")
        if self.send is None:
            raise CommandRefused(Refused.NOT_DISPATCHING, web.HTTPConflict, "this server does not dispatch")
        try:
            command = await self.send(device, name, args, self.ttl_s)
        except aiomqtt.MqttError as exc:
            raise CommandRefused(Refused.BROKER_DOWN, web.HTTPServiceUnavailable,
                                 f"the cloud's broker connection is down: {exc}") from exc
        return await self.record(operator, command)

    async def record(self, operator: Operator, command: Command) -> dict[str, Any]:
        """Audit a sent command (from this desk, or one an action sent: a re-offer's withdraw_block); its result
        then shows in the van's list as any other's."""
        args = dict(command.args)
        record = {"id": command.id, "device": command.device, "name": command.name, "args": args,
                  "operator": operator.name, "role": operator.role.value, "sent_at": _iso(time.time()),
                  "expires_at": _iso(command.expires_at.timestamp())}
        self.counters["sent"] += 1
        try:
            await asyncio.to_thread(self.audit.append, record)
        except OSError as exc:  # sent all the same: the log line below is its audit then
            self.counters["audit_failed"] += 1
            log.error("command audit %s not written: %s", self.audit.path, exc)
        log.info("operator %s (%s) sent %s %s to %s: %s", operator.name, operator.role.value, command.name,
                 command.id, command.device, json.dumps(args, sort_keys=True)[:300])
        return record


DESK = web.AppKey("commands", CommandDesk)


def _desk(request: web.Request) -> CommandDesk:
    return request.app[DESK]


async def send(request: web.Request) -> web.Response:
    """POST /api/vans/{device}/commands {name, pairs | args}: 202 with the audit record (its id)."""
    desk, operator = _desk(request), _session(request).operator
    device = _id(request, "device")
    try:
        try:
            doc = json.loads(await request.read())
        except ValueError:
            raise _bad("the body is not JSON") from None
        record = await desk.submit(operator, device, doc)
    except CommandRefused as exc:
        raise desk.refuse(operator, device, exc) from None
    response = _json(record)
    response.set_status(202)
    return response


async def listing(request: web.Request) -> web.Response:
    """GET /api/vans/{device}/commands: the van's newest commands with their results, and the commands this
    operator may send (the page's menu)."""
    desk, device = _desk(request), _id(request, "device")
    operator = _session(request).operator
    if not await asyncio.to_thread(queries.visible, desk.db, device, operator.station):
        raise _error(web.HTTPNotFound, "no such van")
    doc = await asyncio.to_thread(history, desk.db, desk.audit, device, time.time())
    return _json({**doc, "allowed": [name for name in CATALOGUE if may_send(operator, name)]})


async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/vans/{device}/commands/events: server-sent `commands` events whenever the list changed (a
    result stored, a command sent from another page)."""
    desk, device = _desk(request), _id(request, "device")
    if not await asyncio.to_thread(queries.visible, desk.db, device, _station(request)):
        raise _error(web.HTTPNotFound, "no such van")
    return await stream(request, desk.live, device, "commands", HEADERS)


async def blob(request: web.Request) -> web.Response:
    """GET /api/vans/{device}/blobs/{blob_id}: an uploaded log (gzip) as a download."""
    desk, device, blob_id = _desk(request), _id(request, "device"), _id(request, "blob_id")
    if not is_blob(blob_id) or not await asyncio.to_thread(queries.visible, desk.db, device, _station(request)):
        raise _error(web.HTTPNotFound, "no such blob")
    data = await asyncio.to_thread(photos.read, desk.db, device, blob_id)
    if data is None:
        raise _error(web.HTTPNotFound, "no such blob")
    return web.Response(body=data, content_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{device}-{blob_id}.log.gz"'})


def install(app: web.Application, desk: CommandDesk) -> None:
    """The command routes on the page's app (behind its guard: session, CSRF on POST, Origin, Host)."""
    app[DESK] = desk
    app.router.add_post("/api/vans/{device}/commands", send)
    app.router.add_get("/api/vans/{device}/commands", listing)
    app.router.add_get("/api/vans/{device}/commands/events", events)
    app.router.add_get("/api/vans/{device}/blobs/{blob_id}", blob)

    async def closing(_: web.Application) -> None:
        await desk.live.stop()
    app.on_shutdown.append(closing)
