"""`flexedge status`: who this device is, where its data lives, and its store."""
from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict

from device import __version__
from device.cli.common import Subparsers, emit, load_context
from device.paths import store_path


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("status", parents=[common], help="device identity, data directory, store state")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    with ctx.open_store() as store:
        stats = store.stats()
        photos = store.state.photo_stats()
        block = store.state.get("current_block")
    device = ctx.config.device
    free_mb = shutil.disk_usage(ctx.data_dir).free / 1e6
    disk = "low" if free_mb < ctx.config.store.min_free_mb * 1.048576 else "ok"  # min_free_mb is in MiB
    doc = {"version": __version__, "device": device.id, "fleet": device.fleet, "station": device.station,
           "role": device.role.value, "data_dir": str(ctx.data_dir), "store": str(store_path(ctx.data_dir)),
           "current_block": block, "outbox": asdict(stats), "photos": asdict(photos),
           "disk": {"free_mb": round(free_mb, 1), "condition": disk}}
    emit(args, doc, "\n".join([
        f"flexedge {__version__}  device {device.id} ({device.role.value}) "
        f"fleet {device.fleet} station {device.station}",
        f"data dir   {ctx.data_dir}",
        f"block      {block or '-'}",
        f"outbox     {stats.depth} pending, last seq {stats.last_seq}, last acked {stats.last_acked_seq}",
        f"photos     {photos.pending} pending upload ({photos.pending_bytes / 1e6:.1f} MB), {photos.uploaded} in the "
        f"cloud, {photos.on_disk} on disk ({photos.on_disk_bytes / 1e6:.1f} MB)",
        f"disk       {free_mb:.0f} MB free ({disk}; low below {ctx.config.store.min_free_mb} MiB)",
    ]))
    return 0
