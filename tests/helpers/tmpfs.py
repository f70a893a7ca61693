"""A real small filesystem for disk-full tests: a size-limited tmpfs mounted for the duration (needs root)."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Iterator


class MountRefused(RuntimeError):
    """This machine would not mount a tmpfs (not root, or no mount permission in the container)."""


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "1m") at `mount_point`, yield it, unmount (lazily: a test may still hold
    a file open there) at the end."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise MountRefused(f"cannot mount a tmpfs at {mount_point}: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
