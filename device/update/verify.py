"""Is this release acceptable here? The manifest's signature (the fleet's signing key), every file's sha256
and nothing else in the folder, then the rules: the same machine and Python, a version that moves forward
(unless the operator allows a downgrade), a running release at least the manifest's `min_from_version`, and a
store schema the running release can still read after the new one migrated it (else no rollback is possible).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from device.contract.release import MANIFEST_NAME, Manifest, ReleaseError, parse_version
from device.update.errors import UpdateRefused

log = logging.getLogger(__name__)

# The fleet's signature check, injected (the link's Verifier.verify): the signed document in, its body out;
# it raises on a bad or unknown signature.
SignatureCheck = Callable[[Any], dict[str, Any]]
HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path, check: SignatureCheck) -> Manifest:
    try:
        signed = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UpdateRefused(f"no readable {MANIFEST_NAME}: {exc}") from None
    try:
        body = check(signed)
    except Exception as exc:  # noqa: BLE001 - the injected check's errors all mean: not signed by the fleet
        raise UpdateRefused(f"manifest signature: {exc}") from None
    try:
        return Manifest.from_body(body)
    except ReleaseError as exc:
        raise UpdateRefused(str(exc)) from None


def check_files(folder: Path, manifest: Manifest) -> None:
    """Every listed file present with its hash, and no file that is not listed."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    extra = sorted(present - set(manifest.files) - {MANIFEST_NAME})
    if extra:
        raise UpdateRefused(f"files not in the manifest: {', '.join(extra[:5])}")
    for name, digest in manifest.files.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise UpdateRefused(f"{name} missing from the release")
        if sha256_file(path) != digest:
            raise UpdateRefused(f"{name}: sha256 differs from the manifest")


@dataclass(frozen=True)
class Running:
    """What the van runs now, to judge a release against."""

    version: str
    store_schema: int  # device.store.migrations.latest_version() of the running release
    machine: str
    python: str


def check_acceptable(manifest: Manifest, running: Running, *, allow_downgrade: bool) -> None:
    if manifest.machine != running.machine or manifest.python != running.python:
        raise UpdateRefused(f"release for {manifest.machine}/Python {manifest.python}, this van is "
                            f"{running.machine}/Python {running.python}")
    if manifest.key <= parse_version(running.version) and not allow_downgrade:
        raise UpdateRefused(f"version {manifest.version} does not move forward from {running.version} "
                            "(the operator may say allow_downgrade)")
    if parse_version(running.version) < parse_version(manifest.min_from_version):
        raise UpdateRefused(f"release {manifest.version} updates from {manifest.min_from_version} or later; "
                            f"this van runs {running.version}")
    if manifest.store_readable_from > running.store_schema:
        raise UpdateRefused(f"release {manifest.version} migrates the store to schema {manifest.store_schema}, "
                            f"readable from schema {manifest.store_readable_from} only: the running release "
                            f"(schema {running.store_schema}) could not read it after a rollback")
