"""Shared test infrastructure: real mosquitto, real gpsd via gpsfake, raw pty pairs, the real-world test data.

A missing program makes its fixture FAIL with the package to install: in CI a skipped
hardware-in-the-loop test would be a hidden failure. Nothing in the suite skips.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest
from hypothesis import HealthCheck, settings

from cloud_sync.cloud import CloudThread
from device.store import EventStore
from device.testbench.broker import MosquittoBroker
from device.testbench.gpsfake import GpsFake
from device.testbench.load_audit import drop_database
from device.testbench.postgres import PostgresServer
from device.testbench.procs import ProgramMissing
from device.testbench.pty import PtyPair, open_pty_pair
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.fleet import FleetPki
from tests.helpers.sync_harness import start_cloud
from tests.helpers.tmpfs import MountRefused, small_tmpfs

REPO = Path(__file__).resolve().parent.parent
TESTDATA = Path(__file__).resolve().parent / "data"  # real-world data written by others: see data/README.md
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Property tests assert behaviour, never speed: Hypothesis's per-example deadline and its "too slow" health
# check are timing assertions that fail on a busy CI machine. Examples stay as many; only the clock goes.
settings.register_profile("flexedge", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flexedge")


@pytest.fixture(scope="session")
def testdata() -> Path:
    return TESTDATA


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs: a store on it fills up for real."""
    try:
        with small_tmpfs(tmp_path / "small", "1m") as mount_point:
            yield mount_point
    except MountRefused as exc:
        pytest.fail(f"{exc} (the disk-full tests need root)")


Server = TypeVar("Server", MosquittoBroker, PostgresServer)


def _session_server(server: Server) -> Iterator[Server]:
    """Start a real server for the session (a missing program fails the tests) and stop it at the end."""
    try:
        server.start()
    except ProgramMissing as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def _running(broker: MosquittoBroker) -> MosquittoBroker:
    """The session broker, started again if a fault test stopped or killed it."""
    if not broker.running:
        broker.start()
    return broker


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One real broker per session on a free loopback port; tests may stop/kill/start it."""
    yield from _session_server(MosquittoBroker(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL per session (initdb + pg_ctl as an unprivileged user, a free port); each test that
    uses it gets a database of its own."""
    yield from _session_server(PostgresServer())


def _cloud_target(request: pytest.FixtureRequest, directory: Path) -> Iterator[CloudTarget]:
    """A SQLite file, or a fresh PostgreSQL database that is dropped when its tests are done. Dropped at once, its
    files are mostly still unwritten pages in memory: kept to the end of the session, the session's few hundred
    databases (each a copy of template1) reached the disk and deleting them took a minute."""
    if request.param == "sqlite":
        yield CloudTarget("sqlite", directory / "cloud.db", directory / "cloud-photos")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield CloudTarget("postgresql", server.create_database(name), directory / "cloud-photos")
    drop_database(server.url(), name)


@pytest.fixture(params=["sqlite", "postgresql"])
def cloud_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudTarget]:
    """The cloud database of a test, once on each engine: a SQLite file, then a fresh PostgreSQL database."""
    yield from _cloud_target(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_cloud_target(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudTarget]:
    """`cloud_target` shared by a module's tests (a database they only read)."""
    yield from _cloud_target(request, tmp_path_factory.mktemp(f"cloud-{request.param}"))


@pytest.fixture
def broker(mosquitto: MosquittoBroker) -> MosquittoBroker:
    """The session broker, guaranteed running at the start of the test (a fault test may have stopped it)."""
    return _running(mosquitto)


SIM_DEVICES = tuple(f"sim-{n:03d}" for n in range(50))


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPki:
    """CA, broker/cloud certs, device certs (van-a, van-b, van-cmd, van-web, van-ota, van-back, van-swarm,
    sim-000..049), the broker's access config: made by the `flexedge pki` code. van-cmd is the remote commands' van
    (tests/test_commands_e2e.py) alone, van-web the operator page's (tests/test_operator_commands_browser.py),
    van-ota the over-the-air update's (tests/test_update_e2e.py), van-back the withdrawn block's
    (tests/test_withdraw_e2e.py), van-swarm the simulated swarm van's (tests/test_van_swarm.py: a sim device may
    hold a retained route of a block it won in an earlier test)."""
    return FleetPki.create(tmp_path_factory.mktemp("pki"),
                           ("van-a", "van-b", "van-cmd", "van-web", "van-ota", "van-back", "van-swarm",
                            *SIM_DEVICES))


@pytest.fixture(scope="session")
def tls_mosquitto(tmp_path_factory: pytest.TempPathFactory, fleet: FleetPki) -> Iterator[MosquittoBroker]:
    """A real mosquitto with mutual TLS, identity = client id = certificate CN, and the fleet's access control."""
    yield from _session_server(MosquittoBroker(tmp_path_factory.mktemp("mosquitto-tls"),
                                               extra_config=fleet.mosquitto_config()))


@pytest.fixture
def tls_broker(tls_mosquitto: MosquittoBroker) -> MosquittoBroker:
    """The TLS broker, running at the start of the test (fault tests stop and kill it)."""
    return _running(tls_mosquitto)


@pytest.fixture
def cloud(tls_broker: MosquittoBroker, fleet: FleetPki, tmp_path: Path) -> Iterator[CloudThread]:
    """The reference cloud on the TLS broker (one ingest worker and the dispatcher), its database
    `tmp_path / "cloud.db"`; stopped after the test."""
    thread = start_cloud(fleet, tls_broker.port, tmp_path / "cloud.db", workers=1)
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def van_store(tmp_path: Path) -> Iterator[EventStore]:
    """van-a's event store (`tmp_path / "van-a.db"`), closed after the test."""
    with EventStore(tmp_path / "van-a.db") as store:
        yield store


@pytest.fixture
def gpsfake() -> Iterator[Callable[..., GpsFake]]:
    """Factory: `gpsfake(logfile, cycle_s=...)` starts a real gpsd fed from the log on a free port."""
    started: list[GpsFake] = []

    def start(logfile: Path | str, **kwargs: object) -> GpsFake:
        fake = GpsFake(logfile, **kwargs)
        try:
            fake.start()
        except ProgramMissing as exc:
            pytest.fail(str(exc))
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def pty_pair() -> Iterator[PtyPair]:
    pair = open_pty_pair()
    yield pair
    pair.close()


@pytest.fixture(scope="session")
def checker():
    """The shipped model in the real TFLite interpreter (LiteRT)."""
    from device.vision.check import HouseNumberChecker
    from device.vision.errors import ModelError

    try:
        return HouseNumberChecker.default()
    except ModelError as exc:
        pytest.fail(f"{exc} (pip install ai-edge-litert)")
