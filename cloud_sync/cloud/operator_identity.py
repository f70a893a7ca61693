"""Which MQTT identity an operator's command-line run (`flexedge cloud command`, `flexedge cloud release publish`)
connects as. The broker binds the client id to the certificate's CN (`use_username_as_clientid`), and a second
connection with a client id already connected takes its session over: the first is disconnected. So two runs at
once must not share an identity. Each cloud prefix has `OPERATOR_SLOTS` operator identities (`{prefix}-op-{n}`,
issued by `flexedge pki cloud` and given broker access by `flexedge pki mosquitto`, as the workers' are); a run
leases the first free one with an exclusive `flock` on `.{cn}.lock` in the PKI directory and holds it until it
ends (the kernel drops the lock when the process dies, so a killed run frees its slot).

The lease covers the runs on one machine sharing a PKI directory; operators on several machines use distinct
`--client-prefix`es (issued with `flexedge pki cloud --cloud-prefix P`), as the cloud processes do. A PKI made
before operator identities existed has none: the run then uses the single `cloud` identity, one run at a time.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
from typing import Iterator

from cloud_sync.errors import PkiError
from cloud_sync.pki import CLOUD_IDENTITY, Pki, operator_client_ids

log = logging.getLogger(__name__)


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on `path`, or None when another run holds it."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def operator_identity(pki: Pki, prefix: str = CLOUD_IDENTITY, explicit: str | None = None) -> Iterator[str]:
    """The client id (= certificate name in `pki`) this run connects as, held until the block ends. `explicit`
    (`--client-id`) is used as it is, unleased. PkiError when every operator identity of `prefix` is in use."""
    if explicit:
        yield explicit
        return
    issued = [cn for cn in operator_client_ids(prefix) if pki.client(cn).cert_path.exists()]
    if not issued:
        log.warning("no operator identities %s-op-N in %s (run `flexedge pki cloud` and `flexedge pki mosquitto`): "
                    "using %s, which a second run at once would disconnect", prefix, pki.dir, CLOUD_IDENTITY)
        yield CLOUD_IDENTITY
        return
    for cn in issued:
        try:
            fd = _try_lock(str(pki.dir / f".{cn}.lock"))
        except OSError as exc:
            raise PkiError(f"cannot lock {cn} in {pki.dir}: {exc}") from exc
        if fd is None:
            continue
        log.info("connecting as operator identity %s", cn)
        try:
            yield cn
        finally:
            os.close(fd)  # closing the fd drops the lock
        return
    raise PkiError(f"all {len(issued)} operator identities {prefix}-op-0..{len(issued) - 1} are in use by other runs "
                   f"on this machine: wait for one, or use another --client-prefix")


def add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-prefix", default=CLOUD_IDENTITY,
                        help="lease one of the operator identities PREFIX-op-N in --pki (default: cloud)")
    parser.add_argument("--client-id", help="connect as this certificate name in --pki instead (not leased: "
                        "a second run with the same id disconnects the first)")
