"""Fetch a release artifact over HTTPS from the cloud's release server: the server's certificate checked
against the fleet CA, the van's own certificate presented (the same files as its MQTT link), at most the
announced size, the sha256 checked before anything opens it."""
from __future__ import annotations

import hashlib
import logging
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from device.update.errors import UpdateFailed, UpdateRefused

log = logging.getLogger(__name__)

CHUNK = 1 << 16
TIMEOUT_S = 60.0  # per socket operation


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    cert_file: str
    key_file: str


def fetch(url: str, target: Path, *, size: int, sha256: str, tls: TlsFiles) -> Path:
    """Blocking (run it in a thread): download to `target`, or UpdateFailed/UpdateRefused with nothing left."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    digest, received = hashlib.sha256(), 0
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response, open(part, "wb") as out:
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > size:
                    raise UpdateRefused(f"artifact longer than the announced {size} bytes")
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        part.unlink(missing_ok=True)
        raise UpdateFailed(f"download of {url} failed: {exc}") from None
    except UpdateRefused:
        part.unlink(missing_ok=True)
        raise
    if received != size or digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise UpdateRefused(f"artifact is {received} bytes with another sha256 than the command announced")
    shutil.move(part, target)
    log.info("release artifact %s fetched: %d bytes", target.name, received)
    return target
