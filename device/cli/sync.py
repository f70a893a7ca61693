"""`flexedge sync`: run the cloud link on its own (drain the outbox, take offers/routes/commands).

`--until-empty` exits 0 once every event is acked by the cloud: a technician's check, and the child process of
the crash tests. The full agent (`flexedge run`) embeds the same DeviceSync.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from typing import Any

from cloud_sync.device_sync import DeviceSync
from cloud_sync.errors import SyncError
from cloud_sync.signing import Verifier
from cloud_sync.sync_settings import SyncSettings
from device.cli.common import CliError, Context, Subparsers, load_context
from device.cloud_adapter import broker_settings_from_config, sync_settings_from_config
from device.config import ConfigError

log = logging.getLogger(__name__)


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("sync", parents=[common], help="run the cloud link: drain the outbox to the cloud")
    p.add_argument("--until-empty", action="store_true", help="exit once the outbox is empty")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (0: never)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args, check_files=True)
    try:
        settings = sync_settings_from_config(ctx.config)
        verifier = Verifier.from_pem_files(ctx.config.sync.cloud_key_file)
    except (ConfigError, SyncError) as exc:
        raise CliError(str(exc)) from None
    return asyncio.run(_run(args, ctx, settings, verifier))


async def _run(args: argparse.Namespace, ctx: Context, settings: SyncSettings, verifier: Verifier) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ctx.open_store() as store:
        sync = DeviceSync(store, settings, broker_settings_from_config(ctx.config.mqtt), verifier)
        await sync.start()
        code = 0
        try:
            waits: list[asyncio.Task[Any]] = [asyncio.create_task(stop.wait())]
            if args.until_empty:
                waits.append(asyncio.create_task(sync.wait_drained(None)))
            done, pending = await asyncio.wait(waits, timeout=args.timeout or None,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if not done:
                code = 1
        finally:
            await sync.stop()
        stats = store.stats()
        print(json.dumps({"outbox_depth": stats.depth, "last_acked_seq": stats.last_acked_seq,
                          "counters": sync.counters.snapshot()}))
        return code
