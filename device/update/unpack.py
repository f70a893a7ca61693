"""Unpack a release artifact (a tar file) into a staging folder: regular files only, names as the manifest
allows them (one folder level, no links, no device files, no absolute or parent paths), sizes bounded."""
from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

from device.contract.release import FILE_PATTERN, MANIFEST_NAME
from device.update.errors import UpdateRefused

log = logging.getLogger(__name__)

MAX_FILES = 500
MAX_BYTES = 1 << 30  # 1 GiB unpacked


def unpack(artifact: Path, target: Path) -> None:
    """Extract into `target` (created; removed again if anything is wrong)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, mode=0o750)
    try:
        with tarfile.open(artifact, "r:") as tar:
            members = tar.getmembers()
            if len(members) > MAX_FILES or sum(m.size for m in members) > MAX_BYTES:
                raise UpdateRefused(f"artifact too big: {len(members)} files")
            for member in members:
                if member.isdir() and FILE_PATTERN.fullmatch(member.name):
                    continue
                if not member.isfile() or not FILE_PATTERN.fullmatch(member.name):
                    raise UpdateRefused(f"artifact member {member.name!r:.80} is not an allowed file")
            tar.extractall(target, members=[m for m in members if m.isfile()], filter="data")
    except (tarfile.TarError, OSError, UpdateRefused) as exc:
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, UpdateRefused):
            raise
        raise UpdateRefused(f"artifact unreadable: {exc}") from None
    if not (target / MANIFEST_NAME).is_file():
        shutil.rmtree(target, ignore_errors=True)
        raise UpdateRefused(f"artifact has no {MANIFEST_NAME}")
