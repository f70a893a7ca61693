"""Fetch a release artifact over HTTPS from the cloud's release server: the server's certificate checked
against the fleet CA, the van's own certificate presented (the same files as its MQTT link), at most the
announced size, the sha256 checked before anything opens it.

A cut download resumes: the bytes received are kept in `<artifact>.<sha256 prefix>.part` and the next attempt asks
for the rest (an HTTP Range request; a server that answers with the whole file instead starts it over). Attempts
are bounded, with a growing pause between them; the part file outlives a failed command, so the next `update`
for the same artifact (the same sha256) goes on from there: a van on a flaky link converges. A whole file with
another sha256 is refused; if it was resumed, the kept bytes may be what is wrong, so it is fetched once more
from zero first.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from device.update.errors import UpdateFailed, UpdateRefused
from device.update.verify import sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 60.0  # per socket operation
ATTEMPTS = 8  # downloads tried per command before it answers failed
RETRY_BASE_S = 2.0  # pause after the first failed attempt, doubled after each, at most RETRY_MAX_S
RETRY_MAX_S = 60.0
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str


@dataclass(frozen=True)
class FetchPolicy:
    attempts: int = ATTEMPTS
    retry_base_s: float = RETRY_BASE_S
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    attempts: int
    resumed_bytes: int  # bytes that were on disk already when an attempt started (summed over attempts)


class _Cut(Exception):
    """An attempt that ended early (network, server error): the bytes received so far are kept."""


def part_path(target: Path, sha256: str) -> Path:
    """Where the bytes of this artifact collect (named by its sha256: a part of another artifact is never used)."""
    return target.with_name(f"{target.name}.{sha256[:16]}.part")


def _attempt(url: str, part: Path, size: int, context: ssl.SSLContext) -> int:
    """One request from the part's end; returns the part's size after it. _Cut when it ends early."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            if have and response.status == 206:
                match = CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != have:
                    raise _Cut(f"server resumed at {response.headers.get('Content-Range')!r}, not at byte {have}")
                mode = "ab"
            else:
                if have:
                    log.warning("%s: the server sent the whole artifact, not the rest: starting over", url)
                have, mode = 0, "wb"
            with open(part, mode) as out:
                while chunk := response.read(CHUNK):
                    have += len(chunk)
                    if have > size:
                        raise UpdateRefused(f"artifact longer than the announced {size} bytes")
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have == size:  # everything is here already
            return have
        raise _Cut(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise _Cut(f"{type(exc).__name__}: {exc}") from None
    if have < size:
        raise _Cut(f"connection closed at byte {have} of {size}")
    return have


def fetch(url: str, target: Path, *, size: int, sha256: str, tls: TlsFiles,
          policy: FetchPolicy = FetchPolicy()) -> Fetched:
    """Blocking (run it in a thread): download to `target`. UpdateRefused (a longer artifact, another sha256:
    nothing kept) or UpdateFailed after `policy.attempts` cut attempts (the bytes received are kept)."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    part = part_path(target, sha256)
    resumed, last, pause = 0, "", policy.retry_base_s
    for attempt in range(1, policy.attempts + 1):
        if attempt > 1:
            policy.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        resumed += have
        try:
            _attempt(url, part, size, context)
        except _Cut as exc:
            last = str(exc)
            now = part.stat().st_size if part.exists() else 0
            log.warning("download of %s cut (attempt %d of %d, %d of %d bytes kept): %s", url, attempt,
                        policy.attempts, now, size, last)
            continue
        except UpdateRefused:
            part.unlink(missing_ok=True)
            raise
        if sha256_file(part) == sha256:
            os.replace(part, target)
            log.info("release artifact %s fetched: %d bytes in %d attempts (%d bytes resumed)", target.name, size,
                     attempt, resumed)
            return Fetched(target, size, attempt, resumed)
        part.unlink()
        if have == 0:
            raise UpdateRefused(f"artifact is {size} bytes with another sha256 than the command announced")
        last = "the resumed artifact's sha256 differs from the command's: fetching it again from zero"
        log.warning("%s: %s", url, last)
    raise UpdateFailed(f"download of {url} failed after {policy.attempts} attempts "
                       f"({part.stat().st_size if part.exists() else 0} of {size} bytes kept for the next try): {last}")
