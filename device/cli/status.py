"""`flexedge status`: who this device is, which config and data directory it uses, and its store.

Read-only: a data directory without a store is reported (exit 1), never given a new store."""
from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict

from device import __version__
from device.cli.common import Exit, Subparsers, emit, load_context


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("status", parents=[common], help="device identity, config, data directory, store")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    ctx.require_data_dir()
    stats, photos, block = None, None, None
    if ctx.store_path.exists():
        with ctx.open_store(create=False) as store:
            stats = store.stats()
            photos = store.state.photo_stats()
            block = store.state.get("current_block")
    device = ctx.config.device
    free_mb = shutil.disk_usage(ctx.data_dir).free / 1e6
    disk = "low" if free_mb < ctx.config.store.min_free_mb * 1.048576 else "ok"  # min_free_mb is in MiB
    doc = {"version": __version__, "device": device.id, "fleet": device.fleet, "station": device.station,
           "role": device.role.value, "config": str(ctx.config_path) if ctx.config_path else None,
           "data_dir": str(ctx.data_dir), "store": str(ctx.store_path) if stats else None,
           "current_block": block, "outbox": asdict(stats) if stats else None,
           "photos": asdict(photos) if photos else None,
           "disk": {"free_mb": round(free_mb, 1), "condition": disk}}
    outbox = (f"{stats.depth} pending, last seq {stats.last_seq}, last acked {stats.last_acked_seq}" if stats else
              f"no store at {ctx.store_path} (the agent has not run with this data directory)")
    emit(args, doc, "\n".join([
        f"flexedge {__version__}  device {device.id} ({device.role.value}) "
        f"fleet {device.fleet} station {device.station}",
        f"config     {ctx.config_path or 'defaults (no config file)'}",
        f"data dir   {ctx.data_dir}",
        f"block      {block or '-'}",
        f"outbox     {outbox}",
        *([f"photos     {photos.pending} pending upload ({photos.pending_bytes / 1e6:.1f} MB), {photos.uploaded} in "
           f"the cloud, {photos.on_disk} on disk ({photos.on_disk_bytes / 1e6:.1f} MB)"] if photos else []),
        f"disk       {free_mb:.0f} MB free ({disk}; low below {ctx.config.store.min_free_mb} MiB)",
    ]))
    return Exit.OK if stats else Exit.FAILED
