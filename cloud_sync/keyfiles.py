"""Private files (keys) that are never readable by others, not even for a moment."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cloud_sync.errors import PkiError


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 from the first byte: a temporary file made 0600 by mkstemp in the
    same directory, synced and renamed over `path` (a reader sees the old file or the new one, never a part)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PkiError(f"cannot write {path}: {exc}") from exc
