"""Room for a release on the releases filesystem, checked before the download and again before the unpack, so an
update that cannot fit is refused while nothing has changed (a full card would also stop the store's commits).

What a release takes: the artifact (the tar), its unpacked files (about the tar's size; the wheelhouse is removed
once installed) and its venv. The venv's size is estimated from the wheels' unpacked bytes: pip compiles a .pyc
beside every module. Measured on release 0.2.0 (x86-64): an 81.1 MB artifact, 241 MB of unpacked wheels, a
283 MB venv.
"""
from __future__ import annotations

import logging
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from device.update.errors import UpdateFailed

log = logging.getLogger(__name__)

MIB = 1024 * 1024
PYC_FACTOR = 1.25  # venv bytes per unpacked wheel byte (283 / 241 measured, rounded up)
VENV_BASE_BYTES = 24 * MIB  # the interpreter links, pip and setuptools of a fresh venv
ARTIFACT_FACTOR = 4  # venv bytes per artifact byte when nothing better is known (283 / 81 measured, rounded up)


@dataclass(frozen=True)
class SpaceNeed:
    """Bytes still to be written for one release."""

    download: int  # the artifact's bytes not on disk yet
    unpacked: int  # its files, unpacked
    installed: int  # its venv
    margin: int  # left free for the store and the logs

    @property
    def total(self) -> int:
        return self.download + self.unpacked + self.installed + self.margin

    def describe(self) -> str:
        return (f"download {_mb(self.download)}, unpacked {_mb(self.unpacked)}, venv {_mb(self.installed)}, "
                f"margin {_mb(self.margin)}")


def _mb(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def installed_estimate(artifact: Path) -> int:
    """The venv a release artifact makes, from the unpacked size of the wheels it carries (blocking; a wheel that
    is not a readable zip counts as ARTIFACT_FACTOR times its size). Raises OSError or tarfile.TarError for an
    artifact that is not a tar."""
    unpacked = 0
    with tarfile.open(artifact, "r:") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".whl"):
                unpacked += _wheel_unpacked(tar, member)
    return int(unpacked * PYC_FACTOR) + VENV_BASE_BYTES


def _wheel_unpacked(tar: tarfile.TarFile, member: tarfile.TarInfo) -> int:
    handle = tar.extractfile(member)
    try:
        with zipfile.ZipFile(handle) as wheel:  # type: ignore[arg-type]
            return sum(info.file_size for info in wheel.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return ARTIFACT_FACTOR * member.size


def unpacked_size(artifact: Path) -> int:
    """The bytes of the artifact's files once unpacked (from the tar's headers; blocking)."""
    try:
        with tarfile.open(artifact, "r:") as tar:
            return sum(m.size for m in tar.getmembers() if m.isfile())
    except (OSError, tarfile.TarError):
        return artifact.stat().st_size  # unpack refuses it with the reason; the tar's size is the estimate


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def require(path: Path, need: SpaceNeed, when: str) -> int:
    """UpdateFailed "not enough space: need X, have Y" unless `path`'s filesystem has `need.total` free;
    returns the free bytes."""
    have = free_bytes(path)
    if have < need.total:
        log.error("update %s: not enough space on %s: need %d bytes (%s), have %d", when, path, need.total,
                  need.describe(), have)
        raise UpdateFailed(f"not enough space: need {_mb(need.total)}, have {_mb(have)} on {path} {when} "
                           f"({need.describe()})")
    log.info("update %s: %s free on %s, %s needed", when, _mb(have), path, _mb(need.total))
    return have
