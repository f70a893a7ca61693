"""Pairing: a short code shown on the device turns into a long token for one browser.

The code and the paired tokens live in one small JSON file in the data directory, so `flexedge console pair`
(another process) can make a new code while the agent runs. Only SHA-256 hashes of tokens are stored: the
file leaks no usable token. A code is single-use and burnt after a few wrong guesses or when it expires.
Every read-modify-write of the file holds an exclusive lock (flock on a lock file beside it), so parallel
guesses from threads or processes are counted one by one, and each save writes its own temporary file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from device.config import ConsoleSection
from device.contract.files import write_atomically

log = logging.getLogger(__name__)

PAIRING_FILE = "console-pairing.json"
LOCK_FILE = "console-pairing.lock"
CODE_DIGITS = 6


class PairingError(Exception):
    """The code is wrong, expired or burnt."""


@dataclass(frozen=True)
class PairingSettings:
    code_ttl_s: float = 900.0
    max_attempts: int = 5
    max_tokens: int = 4


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of any two texts (hmac.compare_digest refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


class Pairing:
    def __init__(self, data_dir: Path, settings: PairingSettings = PairingSettings(),
                 clock: Callable[[], float] = time.time) -> None:
        self.path = data_dir / PAIRING_FILE
        self.lock_path = data_dir / LOCK_FILE
        self.settings = settings
        self._clock = clock

    @classmethod
    def from_config(cls, section: ConsoleSection, data_dir: Path) -> Pairing:
        return cls(data_dir, PairingSettings(section.pairing_code_ttl_s, section.pairing_max_attempts,
                                             section.max_tokens))

    # --- the file --------------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        fresh: dict[str, Any] = {"code": None, "expires": 0.0, "attempts": 0, "tokens": []}
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError) as exc:  # a damaged file: start over (browsers pair again)
            log.error("pairing file %s unreadable (%r): starting over", self.path, exc)
            return fresh
        if not isinstance(doc, dict):
            log.error("pairing file %s holds no JSON object: starting over", self.path)
            return fresh
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        write_atomically(self.path, json.dumps(doc).encode(), 0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One read-modify-write at a time, across threads and processes."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- codes -----------------------------------------------------------------------------------------

    def new_code(self) -> str:
        """A fresh code (the previous one stops working); paired browsers stay paired."""
        with self._locked():
            return self._new_code()

    def _new_code(self) -> str:
        doc = self._load()
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        doc.update(code=code, expires=self._clock() + self.settings.code_ttl_s, attempts=0)
        self._save(doc)
        log.info("new console pairing code made (valid %.0f s)", self.settings.code_ttl_s)
        return code

    def current_code(self) -> str:
        """The valid code, or a new one when there is none (what the cab screen shows)."""
        with self._locked():
            doc = self._load()
            if doc.get("code") and doc.get("expires", 0) > self._clock():
                return str(doc["code"])
            return self._new_code()

    def pair(self, code: str) -> str:
        """Trade the code for a token; raises PairingError (and counts the attempt) when it is not valid."""
        with self._locked():
            return self._pair(code)

    def _pair(self, code: str) -> str:
        doc = self._load()
        valid = doc.get("code") and doc.get("expires", 0) > self._clock()
        if not valid or not _same(str(doc["code"]), code):
            if valid:
                doc["attempts"] = doc.get("attempts", 0) + 1
                if doc["attempts"] >= self.settings.max_attempts:
                    doc["code"] = None  # burnt: guessing stops here
                    log.warning("console pairing code burnt after %d wrong attempts", doc["attempts"])
                self._save(doc)
            raise PairingError("wrong or expired pairing code")
        token = secrets.token_urlsafe(32)
        tokens = [*doc.get("tokens", []), _hash(token)][-self.settings.max_tokens:]
        doc.update(code=None, attempts=0, tokens=tokens)
        self._save(doc)
        log.info("console paired a browser (%d paired)", len(tokens))
        return token

    def valid(self, token: str | None) -> bool:
        if not token or not token.isascii():  # tokens are URL-safe base64; a header may carry any byte
            return False
        digest = _hash(token)
        return any(hmac.compare_digest(digest, known) for known in self._load().get("tokens", []))

    def revoke_all(self) -> int:
        with self._locked():
            doc = self._load()
            count = len(doc.get("tokens", []))
            doc["tokens"] = []
            self._save(doc)
            return count
