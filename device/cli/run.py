"""`flexedge run`: the agent, until SIGTERM/SIGINT (systemd's stop) ends it cleanly."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from device.assembly import assemble
from device.cli.common import Context, Subparsers, load_context

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("run", parents=[common], help="run the agent (what the systemd service starts)")
    p.set_defaults(func=run)


async def serve(ctx: Context) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    assembly = await assemble(ctx.config, ctx.data_dir)
    log.info("agent %s (%s) running; data in %s", ctx.config.device.id, ctx.config.device.role.value, ctx.data_dir)
    await assembly.run(stop)
    log.info("agent stopped")


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args, check_files=True)
    asyncio.run(serve(ctx))
    return 0
