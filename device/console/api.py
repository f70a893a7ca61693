"""The console's HTTP API (aiohttp, on the agent's own asyncio loop).

Why aiohttp: asyncio-native (the server shares the agent's loop, so a request calls `agent.submit` directly,
no threads or locks), long-maintained, and streaming responses give server-sent events without a plugin.

Every action goes through `Agent.submit`/`Agent.photo`/`Agent.scan`: the same workflow API as the CLI and the
hardware. Access needs a paired token (cookie or `X-Flexedge-Token` header); a state-changing request must
also carry the `X-Flexedge-Request` header (a cross-site form or image cannot set it, and a cross-site script
would need a CORS preflight this server never grants) and, when the browser sends an Origin, a same-origin one.
Bad requests get a 4xx with `{"error": ...}`; the stream is server-sent events.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from device.agent import Agent
from device.console.pairing import Pairing, PairingError
from device.console.state import console_state, notice_doc, outcome_doc
from device.contract.domain import Role
from device.workflow import (
    ArrivedAt,
    ClaimRequested,
    ExceptionReason,
    ExceptionReported,
    LoadingDone,
    Outcome,
    RejectReason,
    SignatureCaptured,
)

log = logging.getLogger(__name__)

COOKIE = "flexedge_token"
TOKEN_HEADER = "X-Flexedge-Token"
REQUEST_HEADER = "X-Flexedge-Request"  # must be present on every POST (CSRF)
MAX_BODY = 256 * 1024  # a signature is a few kB of points
MAX_ID = 100
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@dataclass
class ConsoleCounters:
    requests: int = 0
    unauthorized: int = 0
    bad_requests: int = 0
    rejected_actions: int = 0
    streams: int = 0


@dataclass
class ConsoleApp:
    agent: Agent
    pairing: Pairing
    show_code_on_loopback: bool = True
    state_interval_s: float = 2.0
    allowed_hosts: tuple[str, ...] = ()  # host names besides IP literals and localhost
    counters: ConsoleCounters = field(default_factory=ConsoleCounters)


CONSOLE = web.AppKey("console", ConsoleApp)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(doc, default=str), status=status, content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 naming the problem."""
    if not request.body_exists:
        return {}
    try:
        doc = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad("body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _bad("body must be a JSON object")
    return doc


def _text(doc: dict[str, Any], key: str, *, max_len: int = MAX_ID) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise _bad(f"{key}: expected a non-empty text of at most {max_len} characters")
    return value


def _optional_text(doc: dict[str, Any], key: str, *, max_len: int = MAX_ID) -> str | None:
    return None if doc.get(key) is None else _text(doc, key, max_len=max_len)


def _ids(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= MAX_ID for v in value):
        raise _bad(f"{key}: expected a list of ids")
    return tuple(value)


def _strokes(doc: dict[str, Any]) -> tuple[tuple[tuple[float, float], ...], ...]:
    raw = doc.get("strokes")
    if not isinstance(raw, list) or not raw:
        raise _bad("strokes: expected a non-empty list of strokes, each a list of [x, y] points")
    strokes = []
    for stroke in raw:
        if not isinstance(stroke, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in p) for p in stroke):
            raise _bad("strokes: each stroke must be a list of [x, y] number pairs")
        strokes.append(tuple((float(x), float(y)) for x, y in stroke))
    return tuple(strokes)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """An IP literal, localhost or a configured name: a DNS-rebinding page (its own domain name pointing at
    this address) is refused, so it can neither read the pairing code nor use a token."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if name == "localhost" or name in allowed:
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def _is_loopback(request: web.Request) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(request.remote or "").is_loopback
    return False


@web.middleware
async def _errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    app: ConsoleApp = request.app[CONSOLE]
    app.counters.requests += 1
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            exc.text = json.dumps({"error": exc.reason})
            exc.content_type = "application/json"
        if exc.status == 401:
            app.counters.unauthorized += 1
        elif 400 <= exc.status < 500:
            app.counters.bad_requests += 1
        if exc.status >= 400:
            log.info("console %s %s -> %d %s", request.method, request.path, exc.status, exc.text)
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


@web.middleware
async def _access(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    """The page and its files are public; the API needs a paired token, and POSTs the CSRF header."""
    app: ConsoleApp = request.app[CONSOLE]
    if not _host_allowed(request.host, app.allowed_hosts):
        raise web.HTTPForbidden(reason=f"host {request.host!r} is not this console (use its IP address)")
    if request.method == "POST":
        if REQUEST_HEADER not in request.headers:
            raise web.HTTPForbidden(reason=f"missing {REQUEST_HEADER} header")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(reason=f"cross-origin request from {origin}")
    public = not request.path.startswith("/api/") or request.path in ("/api/pair", "/api/pairing-code")
    if not public:
        token = request.headers.get(TOKEN_HEADER) or request.cookies.get(COOKIE)
        if not await asyncio.to_thread(app.pairing.valid, token):
            raise web.HTTPUnauthorized(reason="not paired: enter the pairing code shown on the device")
    return await handler(request)


# --- pairing -----------------------------------------------------------------------------------------------


async def pair(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    code = _text(await _body(request), "code", max_len=20)
    try:
        token = await asyncio.to_thread(app.pairing.pair, code)
    except PairingError as exc:
        raise web.HTTPUnauthorized(reason=str(exc)) from None
    response = _json({"paired": True, "token": token})
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=365 * 86400, path="/")
    return response


async def pairing_code(request: web.Request) -> web.Response:
    """The cab screen (a loopback client) shows the code, so the driver can pair a phone or the screen itself."""
    app: ConsoleApp = request.app[CONSOLE]
    if not (app.show_code_on_loopback and _is_loopback(request)):
        raise web.HTTPForbidden(reason="the pairing code is shown on the device only")
    return _json({"code": await asyncio.to_thread(app.pairing.current_code)})


# --- reading -----------------------------------------------------------------------------------------------


async def view(request: web.Request) -> web.Response:
    return _json(await console_state(request.app[CONSOLE].agent))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `notice` for each workflow notice, `state` after notices and every few seconds."""
    app: ConsoleApp = request.app[CONSOLE]
    agent = app.agent
    queue = agent.subscribe()
    app.counters.streams += 1
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no", **SECURITY_HEADERS})
    await response.prepare(request)

    async def send(name: str, doc: Any) -> None:
        await response.write(f"event: {name}\ndata: {json.dumps(doc, default=str)}\n\n".encode())

    try:
        await send("state", await console_state(agent))
        while True:
            with contextlib.suppress(TimeoutError):
                notice = await asyncio.wait_for(queue.get(), app.state_interval_s)
                await send("notice", notice_doc(notice))
                while not queue.empty():  # a burst of notices gets one state after it
                    await send("notice", notice_doc(queue.get_nowait()))
            await send("state", await console_state(agent))
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        agent.unsubscribe(queue)
    return response


async def photo_file(request: web.Request) -> web.StreamResponse:
    photo_id = request.match_info["photo_id"]
    if len(photo_id) > MAX_ID:
        raise _bad("photo id too long")
    record = await asyncio.to_thread(request.app[CONSOLE].agent.store.state.photo, photo_id)
    if record is None or not Path(record["path"]).is_file():
        raise web.HTTPNotFound(reason=f"no photo {photo_id}")
    return web.FileResponse(record["path"], headers={"Content-Type": "image/jpeg", **SECURITY_HEADERS})


# --- actions -----------------------------------------------------------------------------------------------


def _answer(app: ConsoleApp, outcome: Outcome) -> web.Response:
    """Accepted: 200. Refused by the workflow: 409 (422 for a malformed field), with its reason."""
    rejection = outcome.rejection
    if rejection is None:
        return _json(outcome_doc(outcome))
    app.counters.rejected_actions += 1
    invalid = rejection.reason is RejectReason.INVALID_INPUT
    return _json({**outcome_doc(outcome), "error": rejection.detail}, status=422 if invalid else 409)


def _current_stop(app: ConsoleApp, doc: dict[str, Any]) -> str:
    stop_id = _optional_text(doc, "stop_id") or getattr(app.agent.runner.workflow.state, "current_stop", None)
    if not stop_id:
        raise web.HTTPConflict(reason="not at a stop")
    return stop_id


def _vehicle_only(app: ConsoleApp) -> None:
    if app.agent.role is not Role.VEHICLE:
        raise web.HTTPConflict(reason="this is a dock unit: vehicle actions are not available")


async def claim(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    block_id = _text(await _body(request), "block_id")
    return _answer(app, await app.agent.submit(ClaimRequested(block_id)))


async def loading_done(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    await _body(request)
    return _answer(app, await app.agent.submit(LoadingDone()))


async def arrive(request: web.Request) -> web.Response:
    """The driver says "I am here" when the geofence has not (a stop with a poor fix)."""
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    stop_id = _text(await _body(request), "stop_id")
    return _answer(app, await app.agent.submit(ArrivedAt(stop_id)))


async def scan(request: web.Request) -> web.Response:
    """A code typed in when a label will not scan: the same input as the scanner's."""
    app: ConsoleApp = request.app[CONSOLE]
    code = _text(await _body(request), "code")
    return _answer(app, await app.agent.scan(code))


async def photo(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    doc = await _body(request)
    stop_id = _current_stop(app, doc)
    if app.agent.take_photo is None:
        raise web.HTTPConflict(reason="no camera attached to this unit")
    try:
        outcome = await app.agent.photo(stop_id)
    except Exception as exc:  # a camera or vision fault: the driver retries or records an exception
        log.exception("proof photo failed at %s", stop_id)
        raise web.HTTPServiceUnavailable(reason=f"the camera failed: {exc}") from None
    if outcome is None:
        raise web.HTTPConflict(reason=f"stop {stop_id} is not on the route")
    return _answer(app, outcome)


async def signature(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    doc = await _body(request)
    item = SignatureCaptured(_current_stop(app, doc), _ids(doc, "package_ids"), strokes=_strokes(doc))
    return _answer(app, await app.agent.submit(item))


async def exception(request: web.Request) -> web.Response:
    app: ConsoleApp = request.app[CONSOLE]
    _vehicle_only(app)
    doc = await _body(request)
    reasons = [r.value for r in ExceptionReason]
    if doc.get("reason") not in reasons:
        raise _bad(f"reason: one of {reasons}")
    reason = ExceptionReason(doc["reason"])
    note = _optional_text(doc, "note", max_len=500) or ""
    item = ExceptionReported(_current_stop(app, doc), reason, _ids(doc, "package_ids"), note)
    return _answer(app, await app.agent.submit(item))


# --- the page ----------------------------------------------------------------------------------------------


def _static_dir() -> Path:
    return Path(str(resources.files("device.console") / "static"))


async def page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    path = _static_dir() / name
    if "/" in name or name.startswith(".") or not path.is_file() or path.suffix not in STATIC_TYPES:
        raise web.HTTPNotFound(reason=f"no file {name}")
    return web.FileResponse(path, headers={"Content-Type": STATIC_TYPES[path.suffix], **SECURITY_HEADERS})


def build_app(console: ConsoleApp) -> web.Application:
    app = web.Application(middlewares=[_errors_as_json, _access], client_max_size=MAX_BODY)
    app[CONSOLE] = console
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", page)
    app.router.add_post("/api/pair", pair)
    app.router.add_get("/api/pairing-code", pairing_code)
    app.router.add_get("/api/view", view)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/photo/{photo_id}", photo_file)
    for path, handler in (("claim", claim), ("loading-done", loading_done), ("arrive", arrive), ("scan", scan),
                          ("photo", photo), ("signature", signature), ("exception", exception)):
        app.router.add_post(f"/api/{path}", handler)
    return app
