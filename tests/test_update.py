"""Over-the-air updates, the van's rules one at a time (device/update/): signature and hashes, versions that move
forward, a store the previous release can read, a safe unpack, the atomic switch, the guard that ends a crash loop
in a rollback, the health gate, and the rollout's waves. The end-to-end path with real releases, real processes and
the unit's own commands is tests/test_update_e2e.py."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import sqlite_utils

from cloud_sync.cloud.release.rollout import VanResult, roll_out, waves
from cloud_sync.signing import Signer, Verifier
from device import __version__
from device.contract.release import LOCK_NAME, MANIFEST_NAME, Manifest, ReleaseError, UpdateOrder, parse_version
from device.store import migrations
from device.store.database import open_database
from device.update.errors import UpdateRefused
from device.update.gate import health_gate
from device.update.guard import guard
from device.update.handler import UpdateContext, stage
from device.update.layout import APPLIED, CURRENT, PREVIOUS, ROLLED_BACK, Releases
from device.update.verify import Running
from tests.helpers.fleet import FleetPki, device_config

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
RUNNING = Running("0.5.0", migrations.latest_version(), platform.machine(), PYTHON)


def _manifest(version: str, files: dict[str, bytes], **changes: object) -> Manifest:
    body = Manifest(version=version, files={n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
                    project_wheel=f"wheelhouse/flexedge-{version}-py3-none-any.whl", min_from_version="0.1",
                    store_schema=migrations.latest_version(), store_readable_from=migrations.READABLE_FROM,
                    machine=platform.machine(), python=PYTHON, built_at="2026-11-29T12:00:00+00:00").to_body()
    return Manifest.from_body({**body, **changes})


def artifact(path: Path, signer: Signer, version: str = "0.6.0", *, extra: dict[str, bytes] | None = None,
             tamper: dict[str, bytes] | None = None, links: tuple[str, ...] = (), **changes: object) -> Path:
    """A small release tar (the real build is tested end to end): files listed and signed, then `extra` files
    not in the manifest, `tamper` contents changed after signing, `links` symlink members."""
    files = {f"wheelhouse/flexedge-{version}-py3-none-any.whl": b"wheel " + version.encode(),
             LOCK_NAME: b"# lock\n"}
    signed = signer.sign(_manifest(version, files, **changes).to_body())
    content = {MANIFEST_NAME: json.dumps(signed).encode(), **files, **(extra or {}), **(tamper or {})}
    with tarfile.open(path, "w") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.fixture
def releases(tmp_path: Path) -> Releases:
    base = tmp_path / "opt"
    (base / "venv").mkdir(parents=True)
    found = Releases(tmp_path / "releases")
    assert found.init(base) and not found.init(base)  # the installer's release is the first; a re-run keeps it
    return found


def _ctx(releases: Releases, signer: Signer, running: Running = RUNNING) -> UpdateContext:
    return UpdateContext(releases, running, Verifier.of(signer.public_key).verify, None, 30.0, 3)


def test_versions_are_dotted_numbers_ordered_as_numbers() -> None:
    assert parse_version("0.10.0") > parse_version("0.9.9") > parse_version("0.9")
    for bad in ("1", "v1.2", "1.2-rc1", "01.2", "1..2", "", "1.2.3.4.5"):
        with pytest.raises(ReleaseError):
            parse_version(bad)
    with pytest.raises(ReleaseError):
        UpdateOrder.from_args({"version": "1.0", "url": "http://plain/", "sha256": "0" * 64, "size": 1})


def test_a_signed_release_is_staged_and_every_tampering_is_refused(releases: Releases, tmp_path: Path) -> None:
    fleet = Signer.generate()
    manifest = stage(artifact(tmp_path / "good.tar", fleet), _ctx(releases, fleet), allow_downgrade=False,
                     expect_version="0.6.0")
    assert manifest.version == "0.6.0" and (releases.root / "0.6.0" / LOCK_NAME).is_file()
    cases = {
        "sha256 differs": artifact(tmp_path / "a.tar", fleet, "0.7.0", tamper={LOCK_NAME: b"# changed\n"}),
        "not in the manifest": artifact(tmp_path / "b.tar", fleet, "0.7.0", extra={"wheelhouse/evil.whl": b"x"}),
        "signature": artifact(tmp_path / "c.tar", Signer.generate(), "0.7.0"),
        "not an allowed file": artifact(tmp_path / "d.tar", fleet, "0.7.0", links=("wheelhouse/link.whl",)),
        "command named": artifact(tmp_path / "e.tar", fleet, "0.8.0"),
    }
    for reason, path in cases.items():
        with pytest.raises(UpdateRefused, match=reason):
            stage(path, _ctx(releases, fleet), allow_downgrade=False, expect_version="0.7.0")
        assert not (releases.root / "0.7.0").exists()  # nothing of a refused release is left
    escape = tmp_path / "escape.tar"
    with tarfile.open(escape, "w") as tar:
        info = tarfile.TarInfo("../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UpdateRefused, match="not an allowed file"):
        stage(escape, _ctx(releases, fleet), allow_downgrade=False, expect_version=None)
    assert not (tmp_path / "outside").exists()


def test_versions_move_forward_unless_the_operator_allows_a_downgrade(releases: Releases, tmp_path: Path) -> None:
    fleet = Signer.generate()
    for version in ("0.5.0", "0.4.9"):
        with pytest.raises(UpdateRefused, match="does not move forward"):
            stage(artifact(tmp_path / f"{version}.tar", fleet, version), _ctx(releases, fleet),
                  allow_downgrade=False, expect_version=version)
    assert stage(artifact(tmp_path / "old.tar", fleet, "0.4.9"), _ctx(releases, fleet), allow_downgrade=True,
                 expect_version="0.4.9").version == "0.4.9"
    with pytest.raises(UpdateRefused, match="updates from 0.6 or later"):
        stage(artifact(tmp_path / "far.tar", fleet, "0.9.0", min_from_version="0.6"), _ctx(releases, fleet),
              allow_downgrade=False, expect_version="0.9.0")
    with pytest.raises(UpdateRefused, match="release for riscv64"):
        stage(artifact(tmp_path / "arm.tar", fleet, "0.9.0", machine="riscv64"), _ctx(releases, fleet),
              allow_downgrade=False, expect_version="0.9.0")


def test_a_release_whose_store_the_running_release_could_not_read_is_refused(releases: Releases,
                                                                              tmp_path: Path) -> None:
    fleet = Signer.generate()
    newer = migrations.latest_version() + 1
    with pytest.raises(UpdateRefused, match="could not read it after a rollback"):
        stage(artifact(tmp_path / "s.tar", fleet, "0.6.0", store_schema=newer, store_readable_from=newer),
              _ctx(releases, fleet), allow_downgrade=False, expect_version="0.6.0")
    # A migration that only adds keeps the store readable by the running release: accepted.
    assert stage(artifact(tmp_path / "t.tar", fleet, "0.6.0", store_schema=newer,
                          store_readable_from=migrations.READABLE_FROM), _ctx(releases, fleet),
                 allow_downgrade=False, expect_version="0.6.0").store_schema == newer


def test_an_older_release_opens_a_store_a_newer_one_migrated_only_when_it_may(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    db, _ = open_database(path)
    db.execute(f"PRAGMA user_version = {migrations.latest_version() + 1}")  # as a newer release leaves it
    assert migrations.migrate(db) == 0  # readable from READABLE_FROM: used as it is
    db.execute("UPDATE meta SET value = ? WHERE key = ?", [str(migrations.latest_version() + 1),
                                                           migrations.READABLE_FROM_KEY])
    with pytest.raises(RuntimeError, match="newer than this program"):
        migrations.migrate(db)
    db.conn.close()
    fresh = sqlite_utils.Database(tmp_path / "fresh.db")
    migrations.migrate(fresh)
    assert fresh.execute("SELECT value FROM meta WHERE key = ?", [migrations.READABLE_FROM_KEY]).fetchone() == \
        (str(migrations.READABLE_FROM),)


def test_the_switch_is_a_symlink_rename_and_the_guard_ends_a_crash_loop_in_a_rollback(releases: Releases) -> None:
    base = releases.link(CURRENT)
    (releases.root / "0.6.0" / "venv").mkdir(parents=True)
    pending = releases.switch("0.6.0", "0.5.0", "cmd-1", gate_s=30, max_starts=3)
    assert releases.link(CURRENT) == "0.6.0" and releases.link(PREVIOUS) == base
    assert pending.starts == 0 and releases.pending() == pending
    for start in (1, 2, 3):  # each start of the unit runs the guard first
        assert guard(releases, now=pending.switched_at + 1) == f"starting pending release 0.6.0 (start {start} of 3)"
    assert "rolled back after 3 starts" in guard(releases, now=pending.switched_at + 2)
    assert releases.link(CURRENT) == base and releases.pending() is None
    assert releases.link(PREVIOUS) == base  # as before the switch
    outcome = releases.outcome()
    assert outcome is not None and outcome.result == ROLLED_BACK and outcome.command_id == "cmd-1"
    assert guard(releases) == "no update pending"
    # A release that started but was never proven good is rolled back once its deadline passed (its marker written
    # by a later release, with a field this guard does not know: still understood).
    late = releases.switch("0.6.0", "0.5.0", None, gate_s=30, max_starts=3)
    newer = json.loads(releases.pending_file.read_text())
    releases.pending_file.write_text(json.dumps({**newer, "a_field_of_a_later_release": 1}))
    assert "deadline passed" in guard(releases, now=late.deadline + 1) and releases.link(CURRENT) == base
    # A stop between the marker and the rename: the previous release is kept and the attempt closed.
    cut = releases.switch("0.6.0", "0.5.0", None, gate_s=30, max_starts=3)
    os.replace(releases.root / PREVIOUS, releases.root / CURRENT)  # as if the rename never happened
    assert "switch incomplete" in guard(releases, now=cut.switched_at) and releases.pending() is None


def test_the_health_gate_needs_ready_a_sound_store_and_the_cloud_link(releases: Releases, tmp_path: Path) -> None:
    db, _ = open_database(tmp_path / "events.db")
    db.conn.close()
    (releases.root / "0.6.0").mkdir()
    pending = releases.switch("0.6.0", "0.5.0", None, gate_s=1, max_starts=3)

    async def gate(ready: bool, online: bool) -> str:
        event = asyncio.Event()
        if ready:
            event.set()
        result = await health_gate(pending, event, tmp_path / "events.db", lambda: online, 1.0)
        return result.reason if not result.passed else "passed"
    assert asyncio.run(gate(True, True)) == "passed"
    assert asyncio.run(gate(True, False)) == "the cloud link is not up within 1 s"
    assert asyncio.run(gate(False, True)) == "the agent did not reach READY within 1 s"
    (tmp_path / "events.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    assert asyncio.run(gate(True, True)).startswith("store check failed")
    assert releases.mark_good(pending).result == APPLIED
    (releases.root / "0.4.0").mkdir()  # an old release, neither current nor previous: the card needs the room
    assert releases.prune() == ["0.4.0"] and releases.resolved(CURRENT) == releases.root / "0.6.0"


def test_the_rollout_goes_canary_first_and_stops_at_a_rollback() -> None:
    vans = [f"van-{n}" for n in range(8)]
    assert waves(vans, 1, 3) == [["van-0"], ["van-1", "van-2", "van-3"], ["van-4", "van-5", "van-6"], ["van-7"]]
    sent: list[str] = []

    async def send(device: str) -> str:
        sent.append(device)
        return f"cmd-{device}"

    def answers(bad: str | None, status: str = "failed"):  # type: ignore[no-untyped-def]
        async def wait(device: str, command_id: str) -> VanResult | None:
            if device == bad:
                return None if status == "timeout" else VanResult(device, command_id, status, "rolled back")
            return VanResult(device, command_id, "ok", "running 0.6.0")
        return wait
    report = asyncio.run(roll_out("0.6.0", vans, send, answers(None), canary=1, batch=3))
    assert report.ok and sent == vans
    sent.clear()
    report = asyncio.run(roll_out("0.6.0", vans, send, answers("van-0"), canary=1, batch=3))
    assert sent == ["van-0"] and report.stopped and "van-0 failed" in report.stopped
    assert report.not_reached == vans[1:]
    sent.clear()
    report = asyncio.run(roll_out("0.6.0", vans, send, answers("van-2", "timeout"), canary=1, batch=3))
    assert sent == vans[:4] and not report.ok and report.not_reached == vans[4:]
    sent.clear()
    report = asyncio.run(roll_out("0.6.0", vans, send, answers("van-2", "rejected"), canary=1, batch=3))
    assert sent == vans and report.stopped is None and not report.ok  # a refusal is reported, does not stop


def test_a_technicians_apply_checks_the_same_rules(tmp_path: Path, fleet: FleetPki) -> None:
    """`flexedge update apply FILE`: signed by the fleet key of the van's config, moving forward; refused otherwise
    with one line and exit 1, nothing switched."""
    config = device_config(tmp_path, fleet, 1, "van-ota", f'[update]\nreleases_dir = "{tmp_path / "releases"}"')
    (tmp_path / "opt" / "venv").mkdir(parents=True)
    Releases(tmp_path / "releases").init(tmp_path / "opt")
    cases = {"rejected: manifest signature": artifact(tmp_path / "forged.tar", Signer.generate(), "9.0.0"),
             f"rejected: version 0.0.9 does not move forward from {__version__}":
                 artifact(tmp_path / "old.tar", fleet.signer, "0.0.9")}
    for message, path in cases.items():
        done = subprocess.run([sys.executable, "-m", "device.cli", "update", "apply", str(path), "--config",
                               str(config)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert Releases(tmp_path / "releases").link(CURRENT) == str(tmp_path / "opt")
