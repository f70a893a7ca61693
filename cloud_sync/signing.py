"""Ed25519 signatures over canonical JSON: the cloud signs offers, claim results, routes and commands.

A signed message is `{"body": {...}, "kid": key id, "sig": base64}`; the signature covers
`canonical_bytes(body)` (sorted keys, no spaces: the same function as the event hash chain).

Ed25519 through PyNaCl (libsodium): about 1 MB resident in the agent, where `cryptography` costs 9 MB and the
agent only verifies. Key files are the standard PEM forms (RFC 8410: PKCS#8 private, SubjectPublicKeyInfo
public), the same bytes OpenSSL and `cryptography` read and write.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from cloud_sync.errors import MessageRejected, PkiError, RejectReason
from cloud_sync.keyfiles import write_private
from device.contract.chain import canonical_bytes

# RFC 8410 DER of an Ed25519 key: a fixed header, then the 32 key bytes (the private key's is its seed).
PUBLIC_KEY_DER_HEADER = bytes.fromhex("302a300506032b6570032100")  # SubjectPublicKeyInfo
PRIVATE_KEY_DER_HEADER = bytes.fromhex("302e020100300506032b657004220420")  # PKCS#8 PrivateKeyInfo v1
PEM_LABELS = {PUBLIC_KEY_DER_HEADER: "PUBLIC KEY", PRIVATE_KEY_DER_HEADER: "PRIVATE KEY"}


def _pem(header: bytes, key: bytes) -> bytes:
    body = base64.encodebytes(header + key).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    label = PEM_LABELS[header]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


def _read_pem(path: Path | str, header: bytes, what: str) -> bytes:
    """The 32 key bytes of an Ed25519 PEM file; PkiError for anything else (another key type, garbage)."""
    label = PEM_LABELS[header]
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise PkiError(f"cannot read {what} {path}: {exc}") from exc
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise PkiError(f"{path} is not a PEM {label.lower()}")
    try:
        der = base64.b64decode("".join(text.split(begin, 1)[1].split(end, 1)[0].split()), validate=True)
    except binascii.Error as exc:
        raise PkiError(f"{path}: bad base64 in PEM: {exc}") from exc
    if len(der) != len(header) + 32 or not der.startswith(header):
        raise PkiError(f"{path} is not an Ed25519 {what}")
    return der[len(header):]


def key_id(public_key: VerifyKey) -> str:
    """A short stable name for a public key (first 16 hex of sha256 of its raw bytes)."""
    return hashlib.sha256(bytes(public_key)).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    private_key: SigningKey

    @classmethod
    def generate(cls) -> Signer:
        return cls(SigningKey.generate())

    @classmethod
    def from_pem_file(cls, path: Path | str) -> Signer:
        return cls(SigningKey(_read_pem(path, PRIVATE_KEY_DER_HEADER, "private key")))

    @property
    def public_key(self) -> VerifyKey:
        return self.private_key.verify_key

    @property
    def kid(self) -> str:
        return key_id(self.public_key)

    def sign(self, body: Mapping[str, Any]) -> dict[str, Any]:
        signature = self.private_key.sign(canonical_bytes(body)).signature
        return {"body": dict(body), "kid": self.kid, "sig": base64.b64encode(signature).decode("ascii")}


@dataclass(frozen=True)
class Verifier:
    """Trusted cloud keys by key id (more than one during a key rotation)."""

    keys: Mapping[str, VerifyKey]

    @classmethod
    def of(cls, *public_keys: VerifyKey) -> Verifier:
        return cls({key_id(k): k for k in public_keys})

    @classmethod
    def from_pem_files(cls, *paths: Path | str) -> Verifier:
        return cls.of(*(VerifyKey(_read_pem(path, PUBLIC_KEY_DER_HEADER, "public key")) for path in paths))

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
            key.verify(canonical_bytes(signed["body"]), base64.b64decode(sig, validate=True))
        except (BadSignatureError, binascii.Error, ValueError, TypeError) as exc:
            raise MessageRejected(RejectReason.BAD_SIGNATURE,
                                  f"signature does not verify ({type(exc).__name__})") from None
        return dict(signed["body"])


def write_signing_key(signer: Signer, private_path: Path, public_path: Path) -> None:
    write_private(Path(private_path), _pem(PRIVATE_KEY_DER_HEADER, bytes(signer.private_key)))
    public_path.write_bytes(_pem(PUBLIC_KEY_DER_HEADER, bytes(signer.public_key)))
