"""Cloud signing keys are the standard Ed25519 PEM files: OpenSSL's load, ours are byte-identical to OpenSSL's."""
from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from cloud_sync.errors import PkiError
from cloud_sync.signing import Signer, Verifier, write_signing_key
from device.contract.chain import canonical_bytes


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_signing_keys_are_openssls_pem(tmp_path: Path) -> None:
    key, pub = tmp_path / "openssl.key", tmp_path / "openssl.pub"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    signer = Signer.from_pem_file(key)
    write_signing_key(signer, tmp_path / "ours.key", tmp_path / "ours.pub")
    assert (tmp_path / "ours.key").read_bytes() == key.read_bytes()
    assert (tmp_path / "ours.pub").read_bytes() == pub.read_bytes()
    # An OpenSSL signature over the canonical body verifies, and ours is the same (Ed25519 is deterministic).
    body = {"block_id": "B1", "n": 2}
    (tmp_path / "body").write_bytes(canonical_bytes(body))
    openssl("pkeyutl", "-sign", "-rawin", "-inkey", str(key), "-in", str(tmp_path / "body"),
            "-out", str(tmp_path / "sig"))
    signed = {"body": body, "kid": signer.kid, "sig": base64.b64encode((tmp_path / "sig").read_bytes()).decode()}
    assert Verifier.from_pem_files(pub).verify(signed) == body
    assert signer.sign(body) == signed
    # Our key files open in OpenSSL.
    openssl("pkey", "-in", str(tmp_path / "ours.key"), "-noout")
    openssl("pkey", "-pubin", "-in", str(tmp_path / "ours.pub"), "-noout")


@pytest.mark.parametrize("content", [
    b"",
    b"\xff\xfe not ascii",
    b"-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",  # header, no key bytes
    b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",  # a private label
])
def test_bad_public_key_files_are_pki_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pub"
    path.write_bytes(content)
    with pytest.raises(PkiError):
        Verifier.from_pem_files(path)


def test_an_ec_key_is_not_a_signing_key(tmp_path: Path) -> None:
    key = tmp_path / "ec.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    with pytest.raises(PkiError, match="not an Ed25519"):
        Signer.from_pem_file(key)
