"""Ed25519 signatures over canonical JSON: the cloud signs offers, claim results, routes and commands.

A signed message is `{"body": {...}, "kid": key id, "sig": base64}`; the signature covers
`canonical_bytes(body)` (sorted keys, no spaces: the same function as the event hash chain).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cloud_sync.errors import MessageRejected, PkiError, RejectReason
from device.chain import canonical_bytes


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable name for a public key (first 16 hex of sha256 of its raw bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem_file(cls, path: Path | str) -> Signer:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PkiError(f"cannot read signing key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise PkiError(f"{path} is not an Ed25519 private key")
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    def sign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        signature = self.private_key.sign(canonical_bytes(body))
        return {"body": dict(body), "kid": self.kid, "sig": base64.b64encode(signature).decode("ascii")}


@dataclass(frozen=True)
class Verifier:
    """Trusted cloud keys by key id (more than one during a key rotation)."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, *public_keys: Ed25519PublicKey) -> Verifier:
        return cls({key_id(k): k for k in public_keys})

    @classmethod
    def from_pem_files(cls, *paths: Path | str) -> Verifier:
        keys = []
        for path in paths:
            try:
                key = serialization.load_pem_public_key(Path(path).read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                raise PkiError(f"cannot read public key {path}: {exc}") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise PkiError(f"{path} is not an Ed25519 public key")
            keys.append(key)
        return cls.of(*keys)

    def verify(self, signed: Any) -> dict[str, Any]:
        """The body of a signed message, or MessageRejected (schema or bad_signature)."""
        if not isinstance(signed, Mapping) or not isinstance(signed.get("body"), Mapping):
            raise MessageRejected(RejectReason.SCHEMA, "not a signed message {body, kid, sig}")
        kid, sig = signed.get("kid"), signed.get("sig")
        if not isinstance(kid, str) or not isinstance(sig, str):
            raise MessageRejected(RejectReason.SCHEMA, "kid and sig must be strings")
        key = self.keys.get(kid)
        if key is None:
            raise MessageRejected(RejectReason.BAD_SIGNATURE, f"unknown key id {kid!r:.40}")
        try:
            key.verify(base64.b64decode(sig, validate=True), canonical_bytes(signed["body"]))
        except (InvalidSignature, binascii.Error, ValueError, TypeError) as exc:
            raise MessageRejected(RejectReason.BAD_SIGNATURE,
                                  f"signature does not verify ({type(exc).__name__})") from None
        return dict(signed["body"])


def write_signing_key(signer: Signer, private_path: Path, public_path: Path) -> None:
    private_path.write_bytes(signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    private_path.chmod(0o600)
    public_path.write_bytes(signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
