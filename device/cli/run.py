"""`flexedge run`: the agent, until SIGTERM/SIGINT (systemd's stop) ends it cleanly."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from device.assembly import assemble
from device.cli.common import Context, Subparsers, load_context
from device.commands import PendingMarker, config_change
from device.logsetup import add_log_file
from device.paths import log_file_path

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("run", parents=[common], help="run the agent (what the systemd service starts)")
    p.set_defaults(func=run)


async def serve(ctx: Context) -> int:
    """Run the agent until stopped; the exit code (a remote `restart` asks for the one the unit restarts on)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    assembly = await assemble(ctx.config, ctx.data_dir, config_path=ctx.config_path)
    log.info("agent %s (%s) running; data in %s", ctx.config.device.id, ctx.config.device.role.value, ctx.data_dir)
    await assembly.run(stop)
    agent = assembly.agent
    log.info("agent stopped%s", f" to restart ({agent.restart_reason})" if agent.restart_reason else "")
    return agent.exit_code


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args, check_files=True)
    if ctx.data_dir.is_dir():
        marker = PendingMarker.note_start(ctx.data_dir)  # a command that restarted the agent: one more start
        if marker is not None and config_change.recover_before_start(marker, ctx.data_dir):
            ctx = load_context(args, check_files=True)  # the previous config is back
    log_file = log_file_path(ctx.config.logging.file, ctx.data_dir)
    if log_file is not None:
        add_log_file(log_file, ctx.config.logging.json)
    return asyncio.run(serve(ctx))
