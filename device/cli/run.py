"""`flexedge run`: the agent, until SIGTERM/SIGINT (systemd's stop) ends it cleanly.

While it runs a release that is pending (device/update/), its health gate decides: kept, or the previous
release put back and `run` exits with ROLLBACK_EXIT so the unit starts the previous one.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from device.assembly import assemble
from device.cli.common import Context, Subparsers, load_context
from device.config import Config
from device.update.service import UpdateSettings, watch_updates

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("run", parents=[common], help="run the agent (what the systemd service starts)")
    p.set_defaults(func=run)


def update_settings(config: Config, data_dir: Path) -> UpdateSettings:
    section = config.update
    root = Path(section.releases_dir).expanduser() if section.releases_dir else data_dir / "releases"
    return UpdateSettings(root, section.gate_s, section.max_starts)


async def serve(ctx: Context) -> int:
    stop = asyncio.Event()
    exit_code = 0

    def exit_with(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    assembly = await assemble(ctx.config, ctx.data_dir)
    agent = assembly.agent
    cloud = agent.cloud
    agent.start("update", watch_updates(update_settings(ctx.config, ctx.data_dir), agent.store, agent.ready,
                                        lambda: cloud is not None and cloud.online, exit_with))
    log.info("agent %s (%s) running; data in %s", ctx.config.device.id, ctx.config.device.role.value, ctx.data_dir)
    await assembly.run(stop)
    log.info("agent stopped")
    return exit_code


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args, check_files=True)
    return asyncio.run(serve(ctx))
