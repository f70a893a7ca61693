"""The release download over a bad link and a full card (device/update/fetch.py, device/update/space.py), against
the real release server (HTTPS with the fleet's mutual TLS) behind a TCP relay that cuts connections mid-way, and a
real 1 MiB filesystem: a cut download resumes from the bytes kept on disk, gives up after its attempts with a clear
failure (and keeps its bytes for the next command), a corrupt kept part is fetched again, a release that does not
fit is refused before the download or before the unpack while the executor keeps answering, and old releases are
pruned first (never the current, the previous or the running one)."""
from __future__ import annotations

import asyncio
import hashlib
import io
import os
import platform
import select
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from cloud_sync.cloud.release.server import ReleaseServer, server_tls
from cloud_sync.signing import Verifier
from device.cloud_port import CloudCommand
from device.commands import CommandContext, CommandExecutor, CommandRegistry, Status
from device.store import EventStore
from device.update.command import register_update
from device.update.errors import UpdateFailed
from device.update.fetch import FetchPolicy, TlsFiles, fetch, part_path
from device.update.layout import CURRENT, PREVIOUS, Releases
from device.update.service import UpdateService, UpdateSettings
from device.update.verify import Running
from tests.helpers.fleet import FleetPki, device_config
from tests.test_update import RUNNING, artifact

DEVICE = "van-ota"
NAME = f"flexedge-0.6.0-{platform.machine()}.tar"
SIZE = 2 * 1024 * 1024
NO_WAIT = FetchPolicy(attempts=8, retry_base_s=0.0)


class CuttingRelay:
    """A TCP relay in front of the server: the first `cuts` connections are closed once `cut_after` bytes went
    down them (the TLS stream, as an LTE link drops); `down` counts every byte sent down."""

    def __init__(self, upstream_port: int, cut_after: int, cuts: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after, self.cuts = cut_after, cuts
        self.down = 0
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                limit = self.cut_after if self.connections <= self.cuts else None
            threading.Thread(target=self._relay, args=(client, limit), daemon=True).start()

    def _relay(self, client: socket.socket, limit: int | None) -> None:
        try:
            self._pump(client, limit)
        except OSError:  # either side went away: so does the relayed connection
            client.close()

    def _pump(self, client: socket.socket, limit: int | None) -> None:
        sent = 0
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is upstream:
                        if limit is not None and sent + len(data) > limit:
                            data = data[:limit - sent]
                            client.sendall(data)
                            with self._lock:
                                self.down += len(data)
                            client.shutdown(socket.SHUT_RDWR)  # the link drops mid-transfer
                            return
                        sent += len(data)
                        with self._lock:
                            self.down += len(data)
                        client.sendall(data)
                    else:
                        upstream.sendall(data)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def server(fleet: FleetPki, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The release server on a loop of its own, serving one artifact of random bytes (fetch does not open it)."""
    store = tmp_path / "store"
    store.mkdir()
    payload = os.urandom(SIZE)
    (store / NAME).write_bytes(payload)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    release_server = ReleaseServer(store, "127.0.0.1", 0, server_tls(fleet.pki, ["127.0.0.1"]))
    asyncio.run_coroutine_threadsafe(release_server.start(), loop).result(30)
    issued = fleet.pki.client(DEVICE)
    tls = TlsFiles(str(fleet.pki.ca_cert), str(issued.cert_path), str(issued.key_path))
    try:
        yield {"port": release_server.port, "sha256": hashlib.sha256(payload).hexdigest(), "tls": tls,
               "server": release_server}
    finally:
        asyncio.run_coroutine_threadsafe(release_server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _url(port: int) -> str:
    return f"https://127.0.0.1:{port}/releases/{NAME}"


def test_a_cut_download_resumes_from_the_bytes_on_disk(server: dict[str, Any], tmp_path: Path) -> None:
    relay = CuttingRelay(server["port"], cut_after=SIZE // 4, cuts=3)
    try:
        fetched = fetch(_url(relay.port), tmp_path / "a.tar", size=SIZE, sha256=server["sha256"], tls=server["tls"],
                        policy=NO_WAIT)
    finally:
        relay.close()
    assert hashlib.sha256((tmp_path / "a.tar").read_bytes()).hexdigest() == server["sha256"]
    assert fetched.attempts == 4 and relay.connections == 4 and fetched.resumed_bytes > 0
    # Started over from zero each time, the link would have carried 1.75 x the artifact; resumed, about 1 x
    # (plus four TLS handshakes and headers).
    assert relay.down < 1.1 * SIZE, relay.down
    assert not part_path(tmp_path / "a.tar", server["sha256"]).exists()


def test_a_download_that_never_completes_gives_up_and_the_next_command_goes_on(server: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    target = tmp_path / "b.tar"
    dead = CuttingRelay(server["port"], cut_after=SIZE // 5, cuts=1000)
    try:
        with pytest.raises(UpdateFailed, match=r"failed after 3 attempts \(\d+ of \d+ bytes kept for the next "
                                                r"try\): connection closed at byte"):
            fetch(_url(dead.port), target, size=SIZE, sha256=server["sha256"], tls=server["tls"],
                  policy=FetchPolicy(attempts=3, retry_base_s=0.0))
    finally:
        dead.close()
    kept = part_path(target, server["sha256"]).stat().st_size
    assert 0 < kept < SIZE and not target.exists()
    healed = CuttingRelay(server["port"], cut_after=0, cuts=0)  # the van is back in coverage
    try:
        fetched = fetch(_url(healed.port), target, size=SIZE, sha256=server["sha256"], tls=server["tls"],
                        policy=NO_WAIT)
    finally:
        healed.close()
    assert (fetched.attempts, fetched.resumed_bytes) == (1, kept)
    assert healed.down < SIZE - kept + 64 * 1024  # only the rest came down
    assert hashlib.sha256(target.read_bytes()).hexdigest() == server["sha256"]


def test_a_corrupt_kept_part_is_fetched_again_from_zero(server: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "c.tar"
    part_path(target, server["sha256"]).write_bytes(os.urandom(SIZE // 2))  # not the artifact's first half
    fetched = fetch(_url(server["port"]), target, size=SIZE, sha256=server["sha256"], tls=server["tls"],
                    policy=NO_WAIT)
    assert fetched.attempts == 2  # resumed, found wrong, fetched whole
    assert hashlib.sha256(target.read_bytes()).hexdigest() == server["sha256"]


def _fill(folder: Path, size: int) -> None:
    folder.mkdir(parents=True)
    (folder / "venv.bin").write_bytes(b"\0" * size)


def test_a_release_that_does_not_fit_is_refused_and_old_ones_make_room(small_fs: Path, tmp_path: Path,
                                                                       fleet: FleetPki) -> None:
    """On a real 1 MiB filesystem: an `update` whose release needs more than is free answers failed, "not enough
    space: need X, have Y", before any byte is downloaded; old releases are pruned first (never current, previous
    or the running one); the executor answers the next command as usual."""
    base = tmp_path / "opt"  # the installer's release, this process's
    (base / "venv").mkdir(parents=True)
    releases = Releases(small_fs / "releases")
    releases.init(base)
    _fill(releases.root / "0.5.0", 64 * 1024)
    releases.mark_good(releases.switch("0.5.0", "0.1.0", None, gate_s=30, max_starts=3))
    _fill(releases.root / "0.3.0", 512 * 1024)  # an old release: neither current nor previous
    _fill(releases.root / "0.4.0", 256 * 1024)
    issued = fleet.pki.client(DEVICE)
    tls = TlsFiles(str(fleet.pki.ca_cert), str(issued.cert_path), str(issued.key_path))
    data = tmp_path / "data"
    with EventStore(data / "events.db") as store:
        settings = UpdateSettings(releases.root, fetch_attempts=1, free_margin_mb=0)
        service = UpdateService(settings, store, asyncio.Event(), lambda: True, lambda why: None,
                                prefix=str(base / "venv"))
        registry = CommandRegistry()
        running = Running("0.5.0", RUNNING.store_schema, RUNNING.machine, RUNNING.python)
        register_update(registry, service, running, Verifier.of(fleet.signer.public_key).verify, tls)
        commands = CommandExecutor(registry, CommandContext(store, data, None, None), lambda why: None)
        order = {"version": "0.6.0", "url": "https://127.0.0.1:1/releases/x.tar", "sha256": "0" * 64}

        async def scenario() -> list[Any]:
            return [await commands.execute(CloudCommand("u-1", "update", {**order, "size": 4 * 1024 * 1024})),
                    await commands.execute(CloudCommand("u-2", "update", {**order, "size": 128 * 1024,
                                                                          "installed_bytes": 128 * 1024}))]
        too_big, fits = asyncio.run(scenario())
        answers = [e["data"] for e in store.events() if e["type"] == "command.result"]
    assert too_big.status is Status.FAILED
    assert too_big.detail.startswith("not enough space: need 24.0 MiB, have "), too_big.detail
    assert "before the download (download 4.0 MiB, unpacked 4.0 MiB, venv 16.0 MiB, margin 0.0 MiB)" in too_big.detail
    # The old releases went first (they were not enough); the current, the previous and the running one stay.
    assert sorted(p.name for p in releases.root.iterdir() if not p.name.startswith(".")) == \
        ["0.5.0", "current", "outcome.json", "previous"]
    assert releases.link(CURRENT) == "0.5.0" and releases.link(PREVIOUS) == str(base)
    # A release that fits goes on to its download (here to a dead port: one attempt, a clear failure).
    assert fits.status is Status.FAILED and "failed after 1 attempts" in fits.detail, fits.detail
    assert [(a["id"], a["status"]) for a in answers] == [("u-1", "failed"), ("u-2", "failed")]


def _wheel(unpacked: int) -> bytes:
    """A wheel (a zip) whose files unpack to `unpacked` bytes (zeros: a few KiB in the artifact)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("deps/data.bin", b"\0" * unpacked)
    return out.getvalue()


def test_a_downloaded_release_that_would_not_fit_unpacked_is_refused_before_the_unpack(
        small_fs: Path, tmp_path: Path, fleet: FleetPki) -> None:
    """`flexedge update apply FILE` (the same path as the command after its download) with a small artifact whose
    wheels unpack to more than the filesystem holds: refused before anything is unpacked, nothing left behind."""
    root = small_fs / "releases"
    config = device_config(tmp_path, fleet, 1, DEVICE, f'[update]\nreleases_dir = "{root}"\nfree_margin_mb = 0')
    (tmp_path / "opt" / "venv").mkdir(parents=True)
    Releases(root).init(tmp_path / "opt")
    path = artifact(tmp_path / "big.tar", fleet.signer, "9.0.0",
                    extra={"wheelhouse/deps-1.0-py3-none-any.whl": _wheel(8 * 1024 * 1024)})
    assert path.stat().st_size < 256 * 1024  # the download itself would fit
    done = subprocess.run([sys.executable, "-m", "device.cli", "update", "apply", str(path), "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "failed: not enough space: need " in done.stderr and "before unpacking" in done.stderr, done.stderr
    assert sorted(p.name for p in root.iterdir()) == ["current"]  # no staging folder, nothing switched
