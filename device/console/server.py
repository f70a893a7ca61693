"""Runs the console's HTTP server on the agent's loop for as long as the agent runs."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from device.agent import Agent
from device.config import ConsoleSection
from device.console.api import ConsoleApp, build_app
from device.console.pairing import Pairing

log = logging.getLogger(__name__)

SHUTDOWN_S = 1.0  # open live streams are cut after this on stop
BACKLOG = 128  # connections the kernel queues before we accept them
REFUSAL_LOG_EVERY = 100  # one log line per this many connections refused over the cap


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed at once, so it holds no file descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class ConsoleError(Exception):
    """The console could not start (the port is taken, the address is not on this unit)."""


class ConsoleServer:
    def __init__(self, agent: Agent, section: ConsoleSection, data_dir: Path) -> None:
        self.section = section
        self.console = ConsoleApp(agent, Pairing.from_config(section, data_dir), section.show_code_on_loopback,
                                  section.state_interval_s, tuple(h.lower() for h in section.allowed_hosts))
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port: int | None = None
        self.refused = 0  # connections closed at once because `max_connections` were open

    async def start(self) -> None:
        """Listen with at most `max_connections` open at once: one more is accepted and closed at once (counted,
        logged every REFUSAL_LOG_EVERY), so idle connections cannot take the agent's file descriptors (the sync
        and the store need them); a connection without a whole request header for `header_timeout_s` is closed,
        so a flood of them leaves the console unreachable for that long at most. If descriptors run out anyway,
        asyncio pauses accepting for a second."""
        # aiohttp's keep-alive timer starts when a connection opens and again after each answer, and closes the
        # connection if no whole request (line and headers) arrived by then: a header read timeout, so idle or
        # slowly-trickling connections cannot hold the `max_connections` slots for good.
        runner = web.AppRunner(build_app(self.console), access_log=None, shutdown_timeout=SHUTDOWN_S,
                               keepalive_timeout=self.section.header_timeout_s)
        await runner.setup()
        handler = runner.server
        assert handler is not None  # set up above
        limit = self.section.max_connections

        def protocol() -> asyncio.BaseProtocol:
            if len(handler.connections) >= limit:
                self.refused += 1
                if self.refused % REFUSAL_LOG_EVERY == 1:
                    log.warning("console: %d connections open, refusing more (%d refused so far)", limit,
                                self.refused)
                return _Refused()
            return handler()

        try:
            self._server = await asyncio.get_running_loop().create_server(
                protocol, self.section.bind, self.section.port, backlog=BACKLOG, reuse_address=True)
        except OSError as exc:
            await runner.cleanup()
            raise ConsoleError(f"console cannot listen on {self.section.bind}:{self.section.port}: {exc}") from exc
        self._runner = runner
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("console on http://%s:%d/ (pairing code: `flexedge console pair`)", self.section.bind, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
