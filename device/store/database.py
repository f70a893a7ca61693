"""Opening the SQLite file: durability PRAGMAs, integrity check, and moving a corrupt file aside."""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from device.store.errors import StoreUnavailable
from device.store.migrations import migrate

log = logging.getLogger(__name__)

# Durability settings every connection to the store uses (the bench's raw baseline uses the same).
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # fsync the WAL on every commit: a returned append survives power loss
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)


@dataclass(frozen=True)
class Recovery:
    """A corrupt database was moved aside and a fresh one started."""

    moved_to: str
    reason: str


def _private(path: Path) -> None:
    """The store is readable by the agent's user only, from its first byte (SQLite gives its -wal and -shm
    files the database file's mode). A store made before this is tightened when its owner opens it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            with contextlib.suppress(PermissionError):  # another user's store: leave its mode to its owner
                os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    _private(path)
    # isolation_level=None: transactions are explicit (sqlite-utils' atomic()), never implicit.
    # check_same_thread=False: the store's writer lends its connection to a waiting caller's thread when it is
    # idle (writer.py); a lock keeps its use to one thread at a time.
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def integrity_problem(path: Path) -> str | None:
    """None when the file is a healthy database (or absent), else what is wrong."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(str(path), isolation_level=None)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:  # cannot open or read it (permissions, read-only): not corrupt
        raise StoreUnavailable(f"{path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    if rows != [("ok",)]:
        return "quick_check: " + "; ".join(str(r[0]) for r in rows[:5])
    return None


def _move_aside(path: Path) -> Path:
    """Keep the corrupt file (and its WAL/SHM) for forensics under a timestamped name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, Path(str(target) + suffix))
    return target


def open_database(path: Path) -> tuple[sqlite_utils.Database, Recovery | None]:
    """Open (creating if needed) and migrate the store; a corrupt file is moved aside, never deleted."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    recovery = None
    problem = integrity_problem(path)
    if problem is None:
        conn = None
        try:
            conn = connect(path)
            db = sqlite_utils.Database(conn)
            migrate(db)
            return db, None
        except sqlite3.OperationalError as exc:  # e.g. a file or directory the process may not write
            if conn is not None:
                conn.close()
            raise StoreUnavailable(f"{path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            if conn is not None:
                conn.close()
    moved = _move_aside(path)
    log.critical("event store %s is corrupt (%s); moved aside to %s and starting a fresh one", path, problem, moved)
    recovery = Recovery(moved_to=str(moved), reason=problem)
    db = sqlite_utils.Database(connect(path))
    migrate(db)
    return db, recovery
