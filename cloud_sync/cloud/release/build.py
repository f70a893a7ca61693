"""Build a release artifact: the project wheel, a wheelhouse of its pinned dependencies (systemd/requirements.lock,
made by tools/lock.sh), the lock, and a manifest signed with the fleet's signing key that names every file with its
sha256 (device/contract/release.py). The van then installs with no package index.

The dependency wheels come from `pip download --require-hashes --only-binary=:all:` into a cache folder that later
builds reuse (pip skips the files it already has); only the files whose sha256 is in the lock go into the release.
The project is built from a copy of the source tree (its git-tracked files), so the checkout gets no build/ folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cloud_sync.signing import Signer
from device.contract.release import LOCK_NAME, MANIFEST_NAME, WHEELHOUSE, Manifest

log = logging.getLogger(__name__)

LOCK_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
GLIBC_MINOR = 36  # as tools/lock.sh: Raspberry Pi OS 12 / Debian 12
# What the source tree says about itself, read by the tree's own code (not this program's).
FACTS_SCRIPT = ("import json; from device import __version__ as v; from device.store import migrations as m; "
                "print(json.dumps({'version': v, 'store_schema': m.latest_version(), "
                "'store_readable_from': getattr(m, 'READABLE_FROM', m.latest_version())}))")


class ReleaseBuildError(Exception):
    pass


@dataclass(frozen=True)
class BuildSettings:
    source: Path  # a checkout of the project
    out_dir: Path  # where flexedge-<version>-<machine>.tar goes
    signer: Signer
    dependency_cache: Path  # downloaded wheels, kept between builds
    lock: Path | None = None  # default: <source>/systemd/requirements.lock
    machine: str = field(default_factory=platform.machine)
    min_from_version: str = "0.1"
    download: bool = True  # False: the dependency wheels come from the cache only (an offline rebuild)


@dataclass(frozen=True)
class BuiltRelease:
    path: Path
    manifest: Manifest
    sha256: str
    size: int
    seconds: dict[str, float]


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise ReleaseBuildError(f"{' '.join(argv[:5])} failed ({result.returncode}): {result.stderr.strip()[-800:]}")
    return result.stdout


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_source(source: Path, target: Path) -> None:
    """The git-tracked files of a checkout (what a release is built from), or the whole tree without the usual
    caches when it is not a git checkout."""
    try:
        names = _run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                      "--exclude-standard"]).split("\0")
    except (ReleaseBuildError, OSError):
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "build", "*.egg-info", ".mypy_cache", ".pytest_cache", "tests"))
        return
    for name in filter(None, names):
        src = source / name
        if src.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / name)


def source_facts(source: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    return dict(json.loads(_run([sys.executable, "-c", FACTS_SCRIPT], cwd=source, env=env)))


def platform_options(machine: str) -> list[str]:
    """pip's options to download wheels for another machine (as tools/lock.sh); none for this one."""
    if machine == platform.machine():
        return []
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(5, GLIBC_MINOR + 1)] + [f"manylinux2014_{machine}"]
    return [option for tag in tags for option in ("--platform", tag)] + [
        "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}", "--implementation", "cp"]


def download_dependencies(lock: Path, cache: Path, machine: str, *, download: bool = True) -> list[Path]:
    """The lock's wheels for `machine`, from the cache or the registry; only files whose hash the lock names."""
    cache.mkdir(parents=True, exist_ok=True)
    if download:
        _run([sys.executable, "-m", "pip", "download", "-q", "--require-hashes", "--only-binary=:all:",
              *platform_options(machine), "-d", str(cache), "-r", str(lock)])
    wanted = set(LOCK_HASH.findall(lock.read_text()))
    return sorted(p for p in cache.iterdir() if p.suffix == ".whl" and sha256_of(p) in wanted)


def build_release(settings: BuildSettings) -> BuiltRelease:
    seconds: dict[str, float] = {}
    lock = settings.lock or settings.source / "systemd" / LOCK_NAME
    with tempfile.TemporaryDirectory(prefix="flexedge-release-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        tree, content = work / "source", work / "content"
        copy_source(settings.source, tree)
        facts = source_facts(tree)
        wheelhouse = content / WHEELHOUSE
        wheelhouse.mkdir(parents=True)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
              str(wheelhouse), str(tree)])
        seconds["project_wheel"] = time.monotonic() - started
        started = time.monotonic()
        for wheel in download_dependencies(lock, settings.dependency_cache, settings.machine,
                                           download=settings.download):
            shutil.copy2(wheel, wheelhouse / wheel.name)
        shutil.copy2(lock, content / LOCK_NAME)
        seconds["dependencies"] = time.monotonic() - started
        started = time.monotonic()
        project = [p for p in wheelhouse.glob("flexedge-*.whl")]
        if len(project) != 1:
            raise ReleaseBuildError(f"expected one project wheel, found {[p.name for p in project]}")
        files = {p.relative_to(content).as_posix(): sha256_of(p) for p in sorted(content.rglob("*")) if p.is_file()}
        manifest = Manifest(
            version=str(facts["version"]), files=files, project_wheel=f"{WHEELHOUSE}/{project[0].name}",
            min_from_version=settings.min_from_version, store_schema=int(str(facts["store_schema"])),
            store_readable_from=int(str(facts["store_readable_from"])), machine=settings.machine,
            python=f"{sys.version_info.major}.{sys.version_info.minor}",
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        (content / MANIFEST_NAME).write_text(json.dumps(settings.signer.sign(manifest.to_body()), indent=1))
        settings.out_dir.mkdir(parents=True, exist_ok=True)
        target = settings.out_dir / artifact_name(manifest.version, settings.machine)
        partial = target.with_name(target.name + ".part")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in [content / MANIFEST_NAME, *(content / name for name in files)]:
                tar.add(path, path.relative_to(content).as_posix(), recursive=False)
        partial.replace(target)
        seconds["manifest_and_tar"] = time.monotonic() - started
    log.info("release %s built: %s", manifest.version, target)
    return BuiltRelease(target, manifest, sha256_of(target), target.stat().st_size, seconds)


def artifact_name(version: str, machine: str) -> str:
    return f"flexedge-{version}-{machine}.tar"


def read_manifest(artifact: Path) -> Manifest:
    """The manifest's body as the cloud wrote it (the cloud trusts its own artifact store; the van verifies)."""
    with tarfile.open(artifact, "r:") as tar:
        member = tar.extractfile(MANIFEST_NAME)
        if member is None:
            raise ReleaseBuildError(f"{artifact}: no {MANIFEST_NAME}")
        return Manifest.from_body(json.loads(member.read())["body"])
