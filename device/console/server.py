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


class ConsoleError(Exception):
    """The console could not start (the port is taken, the address is not on this unit)."""


class ConsoleServer:
    def __init__(self, agent: Agent, section: ConsoleSection, data_dir: Path) -> None:
        self.section = section
        self.console = ConsoleApp(agent, Pairing.from_config(section, data_dir), section.show_code_on_loopback,
                                  section.state_interval_s, tuple(h.lower() for h in section.allowed_hosts))
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        runner = web.AppRunner(build_app(self.console), access_log=None, shutdown_timeout=SHUTDOWN_S)
        await runner.setup()
        site = web.TCPSite(runner, self.section.bind, self.section.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConsoleError(f"console cannot listen on {self.section.bind}:{self.section.port}: {exc}") from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("console on http://%s:%d/ (pairing code: `flexedge console pair`)", self.section.bind, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
