"""Runs the operator page on the cloud's loop: `flexedge cloud ... --http HOST:PORT`."""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from cloud_sync.cloud.engine import is_postgres
from cloud_sync.cloud.web import commands, reoffer
from cloud_sync.cloud.web.accounts import Accounts
from cloud_sync.cloud.web.api import OperatorApp, Reoffer, build_app
from cloud_sync.cloud.web.cache import MAX_ENTRIES, VersionedCache
from cloud_sync.cloud.web.commands import AuditLog, CommandDesk, Send
from cloud_sync.cloud.web.live import LiveFeed
from cloud_sync.cloud.web.readonly import ReadOnlyDb

log = logging.getLogger(__name__)

SHUTDOWN_S = 1.0  # open live streams are cut after this on stop
COMMAND_LOG_SUFFIX = ".commands.jsonl"


class OperatorServerError(Exception):
    """The page could not start (the port is taken, the database is missing)."""


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    db_path: Path | str  # a SQLite file or a postgresql:// URL
    accounts_path: Path
    live_interval_s: float = 2.0
    allowed_hosts: tuple[str, ...] = ()
    tls: ssl.SSLContext | None = None
    cache_entries: int = MAX_ENTRIES  # per-device figures kept between requests (0: recompute every time)
    # The audit of commands sent from the page (default beside a SQLite database: DB + COMMAND_LOG_SUFFIX;
    # required with PostgreSQL)
    command_log: Path | None = None

    @property
    def command_log_path(self) -> Path:
        if self.command_log is not None:
            return self.command_log
        if is_postgres(self.db_path):
            raise OperatorServerError("the page's command audit file must be given with a PostgreSQL database")
        return Path(f"{self.db_path}{COMMAND_LOG_SUFFIX}")


class OperatorServer:
    def __init__(self, settings: HttpSettings, reoffer: Reoffer | None = None, send: Send | None = None) -> None:
        """`send`: the dispatcher's `send_command` (None: the page sends no commands)."""
        self.settings = settings
        self._reoffer = reoffer
        self._send = send
        self.commands: CommandDesk | None = None
        self._runner: web.AppRunner | None = None
        self.app: OperatorApp | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.settings.tls else 'http'}://{self.settings.host}:{self.port}/"

    async def start(self) -> None:
        s = self.settings
        audit_path = s.command_log_path
        db = ReadOnlyDb(s.db_path)
        cache = VersionedCache(s.cache_entries)
        self.app = OperatorApp(db, Accounts(s.accounts_path), LiveFeed(db, s.live_interval_s, cache), self._reoffer,
                               tuple(h.lower() for h in s.allowed_hosts), secure_cookie=s.tls is not None,
                               cache=cache)
        try:
            audit = AuditLog(audit_path)
        except OSError as exc:
            self._close()
            raise OperatorServerError(str(exc)) from exc
        self.commands = CommandDesk(db, audit, self._send, s.live_interval_s)
        app = build_app(self.app)
        commands.install(app, self.commands)
        reoffer.install(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, s.host, s.port, ssl_context=s.tls).start()
        except OSError as exc:
            await runner.cleanup()
            self._close()
            raise OperatorServerError(f"operator page cannot listen on {s.host}:{s.port}: {exc}") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("operator page on %s", self.url)

    def _close(self) -> None:
        if self.app is not None:
            self.app.db.close()
            self.app.accounts.close()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._close()
        self.app = None
