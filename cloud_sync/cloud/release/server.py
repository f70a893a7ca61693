"""Serve release artifacts to the vans over HTTPS with the fleet PKI: the server's certificate is issued by the
fleet CA (`release-server`, made on first use for the names the vans use), and every van must present its own
certificate (mutual TLS; revoked ones refused through the CRL). The artifact's integrity does not rest on TLS:
the van checks the command's sha256 and the manifest's signature. TLS keeps the fleet's software to the fleet.
"""
from __future__ import annotations

import logging
import re
import ssl
from collections import Counter
from pathlib import Path

from aiohttp import web

from cloud_sync.pki import Pki

log = logging.getLogger(__name__)

SERVER_IDENTITY = "release-server"
ARTIFACT_NAME = re.compile(r"flexedge-[0-9.]+-[A-Za-z0-9_]+\.tar")


def server_tls(pki: Pki, hosts: list[str]) -> ssl.SSLContext:
    issued = pki.client(SERVER_IDENTITY)
    if not issued.cert_path.exists():
        issued = pki.issue(SERVER_IDENTITY, server_names=hosts)
        log.info("issued the release server's certificate for %s", ", ".join(hosts))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(issued.cert_path, issued.key_path)
    context.verify_mode = ssl.CERT_REQUIRED
    if pki.crl.exists():
        context.load_verify_locations(cafile=str(pki.crl))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


class ReleaseServer:
    """GET /releases/<artifact>; `downloads` counts completed requests per client certificate name."""

    def __init__(self, directory: Path, host: str, port: int, tls: ssl.SSLContext, *,
                 public_host: str | None = None) -> None:
        self.directory = directory
        self.host = host
        self.public_host = public_host or host  # the name in the URLs the vans get (the certificate's name)
        self.port = port
        self.tls = tls
        self.downloads: Counter[str] = Counter()
        self.refused = 0
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        host = f"[{self.public_host}]" if ":" in self.public_host else self.public_host
        return f"https://{host}:{self.port}/releases/{name}"

    async def _artifact(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = self.directory / name
        if not ARTIFACT_NAME.fullmatch(name) or not path.is_file():
            self.refused += 1
            log.warning("release request for %r refused", name[:80])
            raise web.HTTPNotFound()
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item[0] for item in (peer or {}).get("subject", ()))
        self.downloads[str(subject.get("commonName", "?"))] += 1
        log.info("release %s to %s", name, subject.get("commonName", "?"))
        return web.FileResponse(path)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/releases/{name}", self._artifact)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port, ssl_context=self.tls).start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("release server on https://%s:%d/releases/", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
