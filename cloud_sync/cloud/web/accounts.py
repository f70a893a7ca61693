"""Operator accounts and their sessions, in a small SQLite file of their own (never the event database).

Passwords are stored as Argon2id hashes made by libsodium through PyNaCl (already a pinned dependency of the
project for Ed25519 signatures): `nacl.pwhash.argon2id.str` embeds salt and cost, `nacl.pwhash.verify`
checks. A session is a random token given to the browser as an HttpOnly SameSite cookie; only its SHA-256
is stored, with a CSRF token the page must echo on every state-changing request.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Callable

import nacl.exceptions
import nacl.pwhash

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY, hash BLOB NOT NULL, role TEXT NOT NULL, station TEXT, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, expires REAL NOT NULL
);
"""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
SESSION_TTL_S = 12 * 3600.0  # one shift
MAX_FAILURES = 5  # wrong passwords for one name before it is locked for LOCK_S
LOCK_S = 900.0


class AccountError(Exception):
    """A bad account request (unknown role, a manager without a station, a short password)."""


class Role(StrEnum):
    OPERATOR = "operator"  # the whole fleet
    MANAGER = "manager"  # one station's vans and blocks


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    station: str | None  # None: every station

    def to_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "role": self.role.value, "station": self.station}


@dataclass(frozen=True)
class Session:
    operator: Operator
    token: str
    csrf: str


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginThrottle:
    """Wrong passwords per account name (known or not) in this process: after MAX_FAILURES within LOCK_S the
    name is refused without a password check until LOCK_S after its last failure."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def locked(self, name: str) -> bool:
        recent = [t for t in self._failures.get(name, []) if self._clock() - t < LOCK_S]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return len(recent) >= MAX_FAILURES

    def failed(self, name: str) -> None:
        self._failures.setdefault(name, []).append(self._clock())
        if len(self._failures) > 10_000:  # a flood of made-up names: forget the oldest
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


class Accounts:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time,
                 opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
                 memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE) -> None:
        self.path = path
        self._clock = clock
        self._cost = (opslimit, memlimit)
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.executescript(SCHEMA)
        path.chmod(0o600)
        # Checked when the name is unknown, so a wrong name costs the same time as a wrong password.
        self._decoy = nacl.pwhash.argon2id.str(secrets.token_bytes(16), *self._cost)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def add(self, name: str, password: str, role: Role, station: str | None = None) -> Operator:
        """Create or replace an account (a new password ends the account's sessions)."""
        if not NAME.match(name):
            raise AccountError(f"account name {name!r}: letters, digits and ._@- only")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"password: at least {MIN_PASSWORD} characters")
        if (role is Role.MANAGER) != bool(station):
            raise AccountError("a station manager needs --station; a fleet operator has none")
        digest = nacl.pwhash.argon2id.str(password.encode(), *self._cost)
        with self._lock:
            self.conn.execute("DELETE FROM sessions WHERE name = ?", (name,))
            self.conn.execute("INSERT INTO operators (name, hash, role, station, created_at) VALUES (?, ?, ?, ?, ?) "
                              "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, role = excluded.role, "
                              "station = excluded.station", (name, digest, role.value, station, self._clock()))
        log.info("operator account %s saved (%s%s)", name, role.value, f" of {station}" if station else "")
        return Operator(name, role, station)

    def remove(self, name: str) -> bool:
        with self._lock:
            return self.conn.execute("DELETE FROM operators WHERE name = ?", (name,)).rowcount == 1

    def names(self) -> list[Operator]:
        with self._lock:
            rows = self.conn.execute("SELECT name, role, station FROM operators ORDER BY name").fetchall()
        return [Operator(n, Role(r), s) for n, r, s in rows]

    def login(self, name: str, password: str) -> Session | None:
        """A new session for the right password; None otherwise (the same answer for an unknown name)."""
        with self._lock:
            row = self.conn.execute("SELECT hash, role, station FROM operators WHERE name = ?", (name,)).fetchone()
        try:
            nacl.pwhash.verify(row[0] if row else self._decoy, password.encode())
        except nacl.exceptions.InvalidkeyError:
            log.info("operator login refused for %r", name[:64])
            return None
        if row is None:
            return None
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = self._clock()
        with self._lock:
            self.conn.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            self.conn.execute("INSERT INTO sessions (token_sha256, name, csrf, expires) VALUES (?, ?, ?, ?)",
                              (_sha(token), name, csrf, now + SESSION_TTL_S))
        log.info("operator %s logged in", name)
        return Session(Operator(name, Role(row[1]), row[2]), token, csrf)

    def session(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        with self._lock:
            row = self.conn.execute("SELECT o.name, o.role, o.station, s.csrf FROM sessions s "
                                    "JOIN operators o ON o.name = s.name WHERE s.token_sha256 = ? AND s.expires > ?",
                                    (_sha(token), self._clock())).fetchone()
        return None if row is None else Session(Operator(row[0], Role(row[1]), row[2]), token, row[3])

    def logout(self, token: str) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha(token),))

