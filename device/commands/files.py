"""Whole-file writes that survive a power cut: the old file or the new one under the name, never a part."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    """A temporary file beside `path`, fsynced, renamed over it, the directory fsynced."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(temp, mode)
    os.replace(temp, path)
    fsync_dir(path.parent)
