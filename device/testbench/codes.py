"""Barcode contents for simulated scans: valid EAN-13, GS1-128 SSCC, QR and Code 39 data (no I/O)."""
from __future__ import annotations

import random
import string
from dataclasses import dataclass

from biip.checksums import gs1_standard_check_digit

from firmware_bridge.scanner.parse import Symbology

# What a scanner set to "transmit AIM ID" puts in front of each symbology.
AIM_PREFIX = {
    Symbology.EAN_13: "]E0", Symbology.EAN_8: "]E4", Symbology.CODE_128: "]C0", Symbology.GS1_128: "]C1",
    Symbology.CODE_39: "]A0", Symbology.ITF: "]I0", Symbology.QR: "]Q1", Symbology.GS1_QR: "]Q3",
    Symbology.DATAMATRIX: "]d1", Symbology.GS1_DATAMATRIX: "]d2", Symbology.PDF417: "]L0",
}
CODE39_ALPHABET = string.digits + string.ascii_uppercase + "-. "


@dataclass(frozen=True)
class Barcode:
    symbology: Symbology
    data: str  # as the scanner sends it after the AIM prefix (GS1: FNC1 as GS, no leading FNC1)

    def line(self, aim: bool = True) -> str:
        return (AIM_PREFIX[self.symbology] if aim else "") + self.data


def ean13(rng: random.Random) -> Barcode:
    body = "".join(rng.choice(string.digits) for _ in range(12))
    return Barcode(Symbology.EAN_13, body + str(gs1_standard_check_digit(body)))


def sscc(rng: random.Random) -> str:
    body = str(rng.randrange(10)) + "".join(rng.choice(string.digits) for _ in range(16))
    return body + str(gs1_standard_check_digit(body))


def gs1_128_sscc(rng: random.Random) -> Barcode:
    return Barcode(Symbology.GS1_128, "00" + sscc(rng))


def qr(rng: random.Random) -> Barcode:
    return Barcode(Symbology.QR, f"https://flex.example/p/{rng.getrandbits(64):016x}")


def code39(rng: random.Random) -> Barcode:
    return Barcode(Symbology.CODE_39, "PKG-" + "".join(rng.choice(string.digits + string.ascii_uppercase)
                                                       for _ in range(10)))


GENERATORS = (ean13, gs1_128_sscc, qr, code39)


def mixed_codes(count: int, seed: int = 0) -> list[Barcode]:
    """`count` distinct codes, cycling through EAN-13, GS1-128 (SSCC), QR and Code 39."""
    rng = random.Random(seed)
    seen: set[Barcode] = set()
    codes: list[Barcode] = []
    while len(codes) < count:
        code = GENERATORS[len(codes) % len(GENERATORS)](rng)
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def noise_line(rng: random.Random) -> bytes:
    """What a flaky cable or a misconfigured scanner sends between scans: never a valid scan."""
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.choice([0x80, 0xC3, 0xFF, 0xFE]) for _ in range(rng.randrange(1, 12)))  # not UTF-8
    if kind == 1:
        return b"\x15\x07" + bytes(rng.randrange(0x20, 0x7F) for _ in range(6))  # NAK, BEL: control chars
    if kind == 2:
        length = rng.choice((5, 7, 11))  # never a GTIN length
        return b"]E0" + bytes(rng.choice(b"0123456789") for _ in range(length))
    return b"]C1" + bytes(rng.choice(b"abcxyz!?") for _ in range(8))  # GS1-128 without GS1 data
