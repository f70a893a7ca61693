"""The `update` command on the van: fetch, verify, unpack, install, switch (the restart is the caller's).

It answers at once only when it does not go ahead (refused or failed: nothing on the van changed). Once the
switch is made, the answer is the outcome of the health gate, reported by whichever agent runs next
(device/update/report.py): `command.result` ok from the new release, or failed after a rollback.
"""
from __future__ import annotations

import asyncio
import logging
import platform
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from device.contract.release import WHEELHOUSE, Manifest, ReleaseError, UpdateOrder, parse_version
from device.store import migrations
from device.update.errors import UpdateFailed, UpdateRefused
from device.update.fetch import FetchPolicy, TlsFiles, fetch, part_path
from device.update.install import install
from device.update.layout import CURRENT, PREVIOUS, Releases
from device.update.space import ARTIFACT_FACTOR, MIB, SpaceNeed, installed_estimate, require, unpacked_size
from device.update.unpack import unpack
from device.update.verify import Running, SignatureCheck, check_acceptable, check_files, read_manifest

log = logging.getLogger(__name__)

INCOMING = ".incoming"


def running_release_facts(version: str) -> Running:
    return Running(version, migrations.latest_version(), platform.machine(),
                   f"{sys.version_info.major}.{sys.version_info.minor}")


@dataclass(frozen=True)
class UpdateContext:
    releases: Releases
    running: Running
    check_signature: SignatureCheck
    tls: TlsFiles | None  # None: the artifact is a local file (`flexedge update apply`)
    gate_s: float
    max_starts: int
    fetch_policy: FetchPolicy = FetchPolicy()
    margin_bytes: int = 64 * MIB  # `[update] free_margin_mb`: left free beyond what the release takes
    running_dir: Path | None = None  # the release this process runs from: never pruned


@dataclass(frozen=True)
class Switched:
    """The switch is made; the result comes from the health gate after the restart."""

    manifest: Manifest
    detail: str
    data: Mapping[str, Any]


def _check_order(order: UpdateOrder, running: Running) -> None:
    """Before any download: the version must move forward (the manifest is checked again after)."""
    if parse_version(order.version) <= parse_version(running.version) and not order.allow_downgrade:
        raise UpdateRefused(f"version {order.version} does not move forward from {running.version} "
                            "(the operator may say allow_downgrade)")


def stage(artifact: Path, ctx: UpdateContext, *, allow_downgrade: bool, expect_version: str | None) -> Manifest:
    """Blocking: unpack and verify into `<root>/<version>/`; UpdateRefused leaves nothing behind."""
    root = ctx.releases.root
    staging = root / INCOMING / "staging"
    unpack(artifact, staging)
    try:
        manifest = read_manifest(staging, ctx.check_signature)
        if expect_version is not None and manifest.version != expect_version:
            raise UpdateRefused(f"artifact is release {manifest.version}, the command named {expect_version}")
        check_files(staging, manifest)
        check_acceptable(manifest, ctx.running, allow_downgrade=allow_downgrade)
        target = ctx.releases.release_dir(manifest.version)
        in_use = {ctx.releases.resolved(CURRENT), ctx.releases.resolved(PREVIOUS)}
        if target.resolve() in in_use:
            raise UpdateRefused(f"release {manifest.version} is the current or previous release")
        if target.exists():
            shutil.rmtree(target)  # a failed attempt at the same version
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def check_unpack_space(artifact: Path, ctx: UpdateContext) -> None:
    """Blocking: room for the artifact's files and the venv they make (the artifact is on disk already)."""
    try:
        installed = installed_estimate(artifact)
    except (OSError, tarfile.TarError):
        installed = ARTIFACT_FACTOR * artifact.stat().st_size  # unpack refuses it with the reason
    need = SpaceNeed(0, unpacked_size(artifact), installed, ctx.margin_bytes)
    require(ctx.releases.root, need, "before unpacking")


def make_room(ctx: UpdateContext) -> list[str]:
    """Blocking: remove the releases other than the current, the previous and the running one."""
    return ctx.releases.prune(also_keep=ctx.running_dir)


async def apply_release(artifact: Path, ctx: UpdateContext, command_id: str | None, *,
                        allow_downgrade: bool = False, expect_version: str | None = None) -> Switched:
    if ctx.releases.pending() is not None:
        raise UpdateRefused("another update is pending its health gate")
    await asyncio.to_thread(make_room, ctx)
    await asyncio.to_thread(check_unpack_space, artifact, ctx)
    manifest = await asyncio.to_thread(stage, artifact, ctx, allow_downgrade=allow_downgrade,
                                       expect_version=expect_version)
    target = ctx.releases.release_dir(manifest.version)
    try:
        await install(target, manifest)
    except UpdateFailed:
        await asyncio.to_thread(shutil.rmtree, target, True)
        raise
    await asyncio.to_thread(shutil.rmtree, target / WHEELHOUSE, True)  # installed: 79 MB the card needs more
    ctx.releases.switch(manifest.version, ctx.running.version, command_id, gate_s=ctx.gate_s,
                        max_starts=ctx.max_starts)
    return Switched(manifest, f"switched to {manifest.version}; restarting into it",
                    {"version": manifest.version, "previous_version": ctx.running.version})


def _before_download(incoming: Path, artifact: Path, order: UpdateOrder, ctx: UpdateContext) -> None:
    """Blocking: drop what earlier attempts left in the incoming folder (a part of another artifact, a staging
    folder), prune old releases, then check there is room for the rest of the download, its files and its venv."""
    keep = part_path(artifact, order.sha256)
    for leftover in incoming.iterdir():
        if leftover != keep:
            log.info("removing %s left by an earlier update", leftover.name)
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    make_room(ctx)
    have = keep.stat().st_size if keep.exists() else 0
    installed = order.installed_bytes or ARTIFACT_FACTOR * order.size
    require(ctx.releases.root, SpaceNeed(max(order.size - have, 0), order.size, installed, ctx.margin_bytes),
            "before the download")


async def handle_update(command_id: str, args: Mapping[str, Any], ctx: UpdateContext) -> Switched:
    """The command: raises UpdateRefused/UpdateFailed (answer now), or returns once switched (the answer
    follows from the health gate after the restart)."""
    try:
        order = UpdateOrder.from_args(args)
    except ReleaseError as exc:
        raise UpdateRefused(str(exc)) from None
    _check_order(order, ctx.running)
    if ctx.releases.pending() is not None:
        raise UpdateRefused("another update is pending its health gate")
    if ctx.tls is None:
        raise UpdateFailed("no TLS files to fetch the artifact with")
    incoming = ctx.releases.root / INCOMING
    incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
    artifact = incoming / f"flexedge-{order.version}.tar"
    await asyncio.to_thread(_before_download, incoming, artifact, order, ctx)
    await asyncio.to_thread(fetch, order.url, artifact, size=order.size, sha256=order.sha256, tls=ctx.tls,
                            policy=ctx.fetch_policy)
    try:
        switched = await apply_release(artifact, ctx, command_id, allow_downgrade=order.allow_downgrade,
                                       expect_version=order.version)
    finally:
        artifact.unlink(missing_ok=True)
    return switched
