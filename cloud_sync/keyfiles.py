"""Private files (keys) that are never readable by others, not even for a moment."""
from __future__ import annotations

from pathlib import Path

from cloud_sync.errors import PkiError
from device.contract.files import write_atomically


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the first byte (a reader sees the old file or the new one)."""
    try:
        write_atomically(path, data, 0o600)
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc}") from exc
