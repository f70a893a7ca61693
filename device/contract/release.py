"""A release of the agent as the cloud signs it and the van checks it: the manifest and release versions.

A release artifact is one tar file: `manifest.json` (a signed message, cloud_sync/signing.py's form
`{body, kid, sig}`), the project wheel and the wheels of every pinned dependency under `wheelhouse/`, and the
lock they were pinned by (`requirements.lock`). The manifest's body names every other file with its sha256,
so one signature covers the whole artifact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

MANIFEST_NAME = "manifest.json"
LOCK_NAME = "requirements.lock"
WHEELHOUSE = "wheelhouse"
FORMAT = 1  # the manifest's shape; a van refuses a format it does not know
VERSION_PATTERN = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# A file name inside the artifact: one folder level at most, no dot-dot, no absolute path.
FILE_PATTERN = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._+-]*/)?[A-Za-z0-9_][A-Za-z0-9._+-]*")


class ReleaseError(ValueError):
    """A manifest or a version that cannot be used; the message says which field and why."""


def parse_version(text: str) -> tuple[int, ...]:
    """`1.2.3` -> (1, 2, 3). Releases use plain dotted numbers only, so the order is the tuple's order and no
    pre-release rules are needed on the van (the `packaging` library is not among the van's dependencies)."""
    if not isinstance(text, str) or not VERSION_PATTERN.fullmatch(text):
        raise ReleaseError(f"version {text!r:.40}: expected dotted numbers such as 1.4.2")
    return tuple(int(part) for part in text.split("."))


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ReleaseError(f"manifest.{key}: expected a non-empty string")
    return value


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1_000_000:
        raise ReleaseError(f"manifest.{key}: expected a whole number")
    return value


@dataclass(frozen=True)
class Manifest:
    """What a release is and what it needs from the van it goes to.

    `store_schema`: the store schema version this release migrates to; `store_readable_from`: the oldest
    program schema that can still read a store at that version (device/store/migrations.py). A van whose
    running release has a lower schema refuses: after a rollback its previous release could not read the store.
    `min_from_version`: the oldest running release that may update to this one directly.
    """

    version: str
    files: Mapping[str, str]  # name in the artifact -> sha256 (hex)
    project_wheel: str
    min_from_version: str
    store_schema: int
    store_readable_from: int
    machine: str  # platform.machine() of the wheelhouse: x86_64, aarch64
    python: str  # major.minor the wheels are for
    built_at: str

    def __post_init__(self) -> None:
        parse_version(self.version)
        parse_version(self.min_from_version)
        for name, digest in self.files.items():
            if not isinstance(name, str) or not FILE_PATTERN.fullmatch(name) or name == MANIFEST_NAME:
                raise ReleaseError(f"manifest.files: bad file name {name!r:.60}")
            if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
                raise ReleaseError(f"manifest.files[{name}]: expected a sha256 in hex")
        if self.project_wheel not in self.files or LOCK_NAME not in self.files:
            raise ReleaseError("manifest.files must list the project wheel and the lock")
        if self.store_readable_from > self.store_schema:
            raise ReleaseError("manifest.store_readable_from is above store_schema")

    @property
    def key(self) -> tuple[int, ...]:
        return parse_version(self.version)

    def to_body(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": "flexedge", "version": self.version, "files": dict(self.files),
                "project_wheel": self.project_wheel, "min_from_version": self.min_from_version,
                "store_schema": self.store_schema, "store_readable_from": self.store_readable_from,
                "machine": self.machine, "python": self.python, "built_at": self.built_at}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Manifest:
        if body.get("format") != FORMAT or body.get("name") != "flexedge":
            raise ReleaseError(f"manifest: not a flexedge release of format {FORMAT}")
        files = body.get("files")
        if not isinstance(files, dict) or not files:
            raise ReleaseError("manifest.files: expected an object of name -> sha256")
        return cls(version=_str(body, "version"), files=dict(files), project_wheel=_str(body, "project_wheel"),
                   min_from_version=_str(body, "min_from_version"), store_schema=_int(body, "store_schema"),
                   store_readable_from=_int(body, "store_readable_from"), machine=_str(body, "machine"),
                   python=_str(body, "python"), built_at=_str(body, "built_at"))


@dataclass(frozen=True)
class UpdateOrder:
    """The `update` command's arguments: which release, where the van fetches it, what the artifact's sha256 is
    (checked before it is opened), and whether the operator allows a version that does not move forward."""

    version: str
    url: str
    sha256: str
    size: int
    allow_downgrade: bool = False
    installed_bytes: int | None = None  # the venv it makes, as the cloud estimated it (the van's space check)

    def to_args(self) -> dict[str, Any]:
        return {"version": self.version, "url": self.url, "sha256": self.sha256, "size": self.size,
                "allow_downgrade": self.allow_downgrade,
                **({"installed_bytes": self.installed_bytes} if self.installed_bytes is not None else {})}

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> UpdateOrder:
        version, url, digest, size = args.get("version"), args.get("url"), args.get("sha256"), args.get("size")
        parse_version(version)  # type: ignore[arg-type]
        if not isinstance(url, str) or not url.startswith("https://") or len(url) > 2000:
            raise ReleaseError("update.url: expected an https:// URL")
        if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
            raise ReleaseError("update.sha256: expected a sha256 in hex")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 2**31:
            raise ReleaseError("update.size: expected a byte count")
        allow = args.get("allow_downgrade", False)
        if not isinstance(allow, bool):
            raise ReleaseError("update.allow_downgrade: expected true or false")
        installed = args.get("installed_bytes")
        if installed is not None and (not isinstance(installed, int) or isinstance(installed, bool)
                                      or not 0 < installed <= 2**40):
            raise ReleaseError("update.installed_bytes: expected a byte count")
        return cls(str(version), url, digest, size, allow, installed)
