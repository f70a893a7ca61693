"""The operator page's HTTP API (aiohttp).

Access: `POST /api/login` trades a name and password for a session cookie (HttpOnly, SameSite=Strict,
Secure over TLS). Every other `/api/` path needs the session; every POST also needs the session's CSRF
token in `X-Flexedge-CSRF` and, when the browser sends an Origin, a same-origin one. The Host header must be
an IP literal, localhost or a configured name (no DNS rebinding). A station manager's queries are all scoped
to their station. Bad requests get a 4xx with `{"error": ...}`.
"""
from __future__ import annotations

import asyncio
import csv
import hmac
import io
import ipaddress
import json
import logging
import re
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web

from cloud_sync.cloud.web import analytics, queries
from cloud_sync.cloud.web.accounts import Accounts, LoginThrottle, Session
from cloud_sync.cloud.web.actions import Reoffered
from cloud_sync.cloud.web.cache import VersionedCache
from cloud_sync.cloud.web.live import LiveFeed, stream
from cloud_sync.cloud.web.readonly import ReadDbError, ReadOnlyDb

log = logging.getLogger(__name__)

COOKIE = "flexedge_operator"
CSRF_HEADER = "X-Flexedge-CSRF"
MAX_BODY = 16 * 1024
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
PUBLIC = ("/", "/api/login")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula

Reoffer = Callable[[str], Awaitable[Reoffered]]


@dataclass
class OperatorCounters:
    requests: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    bad_requests: int = 0
    logins_refused: int = 0
    logins_locked: int = 0


@dataclass
class OperatorApp:
    db: ReadOnlyDb
    accounts: Accounts
    live: LiveFeed
    reoffer: Reoffer | None = None  # None: an ingest-only process cannot act
    allowed_hosts: tuple[str, ...] = ()
    secure_cookie: bool = False
    counters: OperatorCounters = field(default_factory=OperatorCounters)
    cache: VersionedCache = field(default_factory=VersionedCache)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


APP = web.AppKey("operator", OperatorApp)
SESSION = web.RequestKey("session", Session)


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def _json(doc: Any) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


def host_allowed(host: str, names: tuple[str, ...]) -> bool:
    """The name the browser used: an IP literal, localhost or one of the configured names."""
    name = host.rsplit(":", 1)[0].strip("[]") if not host.endswith("]") else host.strip("[]")
    if name.lower() in ("localhost", *names):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _session(request: web.Request) -> Session:
    return request[SESSION]


def _station(request: web.Request) -> str | None:
    return _session(request).operator.station


def _id(request: web.Request, key: str) -> str:
    value = request.match_info[key]
    if not ID.match(value):
        raise _error(web.HTTPBadRequest, f"{key}: not an id")
    return value


def _day(request: web.Request) -> str:
    day = request.query.get("day") or time.strftime("%Y-%m-%d", time.gmtime())
    if not DAY.match(day):
        raise _error(web.HTTPBadRequest, "day: expected YYYY-MM-DD")
    return day


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    app: OperatorApp = request.app[APP]
    app.counters.requests += 1
    try:
        await _check(request, app)
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 401:
            app.counters.unauthorized += 1
        elif exc.status == 403:
            app.counters.forbidden += 1
        elif 400 <= exc.status < 500:
            app.counters.bad_requests += 1
        if exc.status >= 400 and exc.content_type != "application/json":
            exc.text, exc.content_type = json.dumps({"error": exc.reason}), "application/json"
        if exc.status >= 400:
            log.info("operator page %s %s -> %d %s", request.method, request.path, exc.status, exc.text)
        exc.headers.update(HEADERS)
        raise
    except ReadDbError as exc:
        log.error("operator page %s: %s", request.path, exc)
        raise _error(web.HTTPServiceUnavailable, "the cloud database cannot be read now") from None
    response.headers.update(HEADERS)
    return response


async def _check(request: web.Request, app: OperatorApp) -> None:
    if not host_allowed(request.host, app.allowed_hosts):
        raise _error(web.HTTPForbidden, f"host {request.host[:80]!r} is not this server")
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise _error(web.HTTPForbidden, "cross-origin request")
    if not request.path.startswith("/api/") or request.path in PUBLIC:
        return
    session = await asyncio.to_thread(app.accounts.session, request.cookies.get(COOKIE))
    if session is None:
        raise _error(web.HTTPUnauthorized, "log in first")
    if request.method == "POST" and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), session.csrf):
        raise _error(web.HTTPForbidden, f"missing or wrong {CSRF_HEADER}")
    request[SESSION] = session


# --- session ---------------------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    app: OperatorApp = request.app[APP]
    try:
        doc = json.loads(await request.read())
        name, password = doc["name"], doc["password"]
        if not isinstance(name, str) or not isinstance(password, str) or len(name) > 64 or len(password) > 512:
            raise TypeError("name and password: short texts")
    except (ValueError, KeyError, TypeError) as exc:
        raise _error(web.HTTPBadRequest, f"expected {{name, password}}: {exc}") from None
    if app.throttle.locked(name):
        app.counters.logins_locked += 1
        log.warning("operator log-in for %r refused: too many wrong passwords", name[:64])
        raise _error(web.HTTPTooManyRequests, "too many wrong passwords: try again later")
    session = await asyncio.to_thread(app.accounts.login, name, password)
    if session is None:
        app.counters.logins_refused += 1
        app.throttle.failed(name)
        raise _error(web.HTTPUnauthorized, "wrong name or password")
    app.throttle.succeeded(name)
    response = _json({**session.operator.to_dict(), "csrf": session.csrf})
    response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", secure=app.secure_cookie, path="/")
    return response


async def logout(request: web.Request) -> web.Response:
    await asyncio.to_thread(request.app[APP].accounts.logout, _session(request).token)
    response = _json({"logged_out": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    session = _session(request)
    return _json({**session.operator.to_dict(), "csrf": session.csrf})


# --- reading ---------------------------------------------------------------------------------------------


async def fleet(request: web.Request) -> web.Response:
    app: OperatorApp = request.app[APP]
    return _json(await asyncio.to_thread(queries.fleet, app.db, _station(request), time.time(), app.cache))


async def van(request: web.Request) -> web.Response:
    doc = await asyncio.to_thread(queries.van, request.app[APP].db, _id(request, "device"), _station(request),
                                  time.time())
    if doc is None:
        raise _error(web.HTTPNotFound, "no such van")
    return _json(doc)


async def proof(request: web.Request) -> web.Response:
    doc = await asyncio.to_thread(queries.proof, request.app[APP].db, _id(request, "device"), _id(request, "stop"),
                                  _station(request))
    if doc is None:
        raise _error(web.HTTPNotFound, "no such van")
    return _json(doc)


async def photo(request: web.Request) -> web.Response:
    data = await asyncio.to_thread(queries.photo, request.app[APP].db, _id(request, "device"),
                                   _id(request, "photo_id"), _station(request))
    if data is None:
        raise _error(web.HTTPNotFound, "no such photo")
    return web.Response(body=data, content_type="image/jpeg")


async def figures(request: web.Request) -> web.Response:
    app: OperatorApp = request.app[APP]
    return _json(await asyncio.to_thread(analytics.day_figures, app.db, _day(request), _station(request),
                                         app.cache))


def spreadsheet_safe(value: Any) -> Any:
    """A text a van sent (a read number, a reason, an id) that a spreadsheet would run as a formula is given a
    leading apostrophe (OWASP's CSV injection advice); numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


async def export_csv(request: web.Request) -> web.Response:
    day = _day(request)
    rows = await asyncio.to_thread(queries.export_rows, request.app[APP].db, day, _station(request))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else list(queries.EXPORT_COLUMNS))
    writer.writeheader()
    writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)
    return web.Response(text=out.getvalue(), content_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="flexedge-{day}.csv"'})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `fleet` with the whole view whenever it changed."""
    return await stream(request, request.app[APP].live, _station(request), "fleet", HEADERS)


# --- the page --------------------------------------------------------------------------------------------


def _static_dir() -> Path:
    return Path(str(resources.files("cloud_sync.cloud.web") / "static"))


async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info.get("name") or "index.html"
    path = _static_dir() / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC or not path.is_file():
        raise _error(web.HTTPNotFound, "no such file")
    return web.FileResponse(path, headers={"Content-Type": STATIC[path.suffix]})


def build_app(operator: OperatorApp) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY)
    app[APP] = operator
    app.router.add_get("/", static)
    app.router.add_get("/static/{name}", static)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/fleet", fleet)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/vans/{device}", van)
    app.router.add_get("/api/vans/{device}/stops/{stop}", proof)
    app.router.add_get("/api/vans/{device}/photos/{photo_id}", photo)
    app.router.add_get("/api/analytics", figures)
    app.router.add_get("/api/export.csv", export_csv)

    async def closing(_: web.Application) -> None:
        await operator.live.stop()
    app.on_shutdown.append(closing)
    return app
