"""One scanner line → a typed `Scan` (no I/O).

The AIM symbology identifier (`]E0`, `]C1`, `]Q1`, ...) and GS1 element strings are interpreted by biip;
this module checks the line is text, maps biip's result onto our `Symbology`, and rejects what is not a
scan: bad UTF-8, control characters, a failed check digit, a GS1 symbol whose data is not GS1.
"""
from __future__ import annotations

import ctypes
import enum
import functools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from firmware_bridge.errors import ScanRejected

if TYPE_CHECKING:
    import biip

GROUP_SEPARATOR = "\x1d"  # FNC1 inside GS1 data, as scanners transmit it
# ISO/IEC 15434 envelopes ("[)>" RS "06" GS ... RS EOT) also use RS and EOT; every other control is garbage.
ALLOWED_CONTROLS = frozenset("\x1d\x1e\x04")
CODE39_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ -.$/+%")


class Symbology(enum.StrEnum):
    EAN_13 = "ean13"
    EAN_8 = "ean8"
    CODE_128 = "code128"
    GS1_128 = "gs1-128"
    CODE_39 = "code39"
    ITF = "itf"
    ITF_14 = "itf14"
    QR = "qr"
    GS1_QR = "gs1-qr"
    DATAMATRIX = "datamatrix"
    GS1_DATAMATRIX = "gs1-datamatrix"
    GS1_DATABAR = "gs1-databar"
    PDF417 = "pdf417"
    AZTEC = "aztec"
    OTHER = "other"  # an AIM prefix we do not name
    UNKNOWN = "unknown"  # no AIM prefix: the scanner was not set to send one


@dataclass(frozen=True)
class _Biip:
    module: ModuleType
    gs1_symbology: dict[Any, Symbology]  # biip's GS1Symbology -> ours
    iso_symbology: dict[Any, Symbology]  # biip's ISOSymbology -> ours


def _give_back_freed_heap() -> None:
    """Return freed heap pages to the kernel (glibc's malloc_trim). biip's import decodes its tables through
    about 70 MB of temporaries; glibc keeps the freed pages resident (about 10 MB) unless asked. Elsewhere
    (musl, macOS) there is no malloc_trim and nothing to do."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


@functools.cache
def _biip() -> _Biip:
    """biip, imported on the first scan: its import builds GS1's company-prefix trie (about 7 MB of resident
    memory, and more while it decodes), which a unit that has not scanned yet, or has no scanner, need not
    carry."""
    import biip
    from biip.symbology import GS1Symbology, ISOSymbology

    _give_back_freed_heap()
    return _Biip(biip, {
        GS1Symbology.EAN_13: Symbology.EAN_13, GS1Symbology.EAN_8: Symbology.EAN_8,
        GS1Symbology.EAN_13_WITH_ADD_ON: Symbology.EAN_13, GS1Symbology.ITF_14: Symbology.ITF_14,
        GS1Symbology.GS1_128: Symbology.GS1_128, GS1Symbology.GS1_DATABAR: Symbology.GS1_DATABAR,
        GS1Symbology.GS1_DATAMATRIX: Symbology.GS1_DATAMATRIX, GS1Symbology.GS1_QR_CODE: Symbology.GS1_QR,
    }, {
        ISOSymbology.CODE_39: Symbology.CODE_39, ISOSymbology.CODE_128: Symbology.CODE_128,
        ISOSymbology.ITF: Symbology.ITF, ISOSymbology.QR_CODE: Symbology.QR,
        ISOSymbology.DATA_MATRIX: Symbology.DATAMATRIX, ISOSymbology.PDF417: Symbology.PDF417,
        ISOSymbology.AZTEC_CODE: Symbology.AZTEC,
    })


_GS1_DATA = frozenset({Symbology.GS1_128, Symbology.GS1_DATAMATRIX, Symbology.GS1_QR, Symbology.GS1_DATABAR})
_EAN_UPC = frozenset({Symbology.EAN_13, Symbology.EAN_8, Symbology.ITF_14})


@dataclass(frozen=True)
class Gs1Field:
    ai: str  # application identifier, e.g. "00" (SSCC), "01" (GTIN)
    value: str
    title: str  # GS1's data title, e.g. "SSCC", "GTIN", "BEST BEFORE or BEST BY"


@dataclass(frozen=True)
class Scan:
    data: str  # the symbol's data, AIM prefix removed, GS kept
    symbology: Symbology
    aim: str | None  # the AIM symbology identifier as received, e.g. "]C1"
    fields: tuple[Gs1Field, ...] = ()
    gtin: str | None = None
    sscc: str | None = None
    ts: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))  # UTC
    mono: float = field(default_factory=time.monotonic)

    @property
    def raw(self) -> str:
        """The line as the scanner sent it (terminator removed)."""
        return (self.aim or "") + self.data

    def field_value(self, ai: str) -> str | None:
        return next((f.value for f in self.fields if f.ai == ai), None)

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "data": self.data, "symbology": self.symbology.value, "aim": self.aim,
                "fields": {f.ai: f.value for f in self.fields}, "gtin": self.gtin, "sscc": self.sscc,
                "ts": self.ts}


def _decode_text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScanRejected("not UTF-8", raw) from None
    bad = [c for c in text if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) and c not in ALLOWED_CONTROLS]
    if bad:
        raise ScanRejected(f"control character 0x{ord(bad[0]):02x}", raw)
    if not text.strip():
        raise ScanRejected("blank line", raw)
    return text


def _symbology(result: biip.ParseResult, tables: _Biip) -> tuple[Symbology, str | None]:
    ident = result.symbology_identifier
    if ident is None:
        return Symbology.UNKNOWN, None
    if ident.gs1_symbology is not None and ident.gs1_symbology in tables.gs1_symbology:
        return tables.gs1_symbology[ident.gs1_symbology], ident.value
    return tables.iso_symbology.get(ident.iso_symbology, Symbology.OTHER), ident.value


def parse_line(raw: bytes, *, require_aim: bool = False) -> Scan:
    """Interpret one line (terminator already removed). Raises ScanRejected for anything not a scan."""
    text = _decode_text(raw)
    lib = _biip()
    try:
        result = lib.module.parse(text)
    except lib.module.ParseError as exc:
        raise ScanRejected(f"unparseable: {exc}", raw) from exc
    except (IndexError, ValueError) as exc:  # biip 5.2 raises IndexError on a bare "]" (found by hypothesis)
        raise ScanRejected(f"unparseable: {type(exc).__name__} in biip: {exc}", raw) from exc
    symbology, aim = _symbology(result, lib)
    if require_aim and aim is None:
        raise ScanRejected("no AIM symbology identifier", raw)
    data = text[len(aim):] if aim else text
    if not data:
        raise ScanRejected("AIM prefix without data", raw)
    if symbology in _EAN_UPC and result.gtin is None:
        raise ScanRejected(f"bad {symbology.value}: {result.gtin_error}", raw)
    if symbology is Symbology.CODE_39 and not set(data) <= CODE39_CHARS:
        raise ScanRejected("character outside Code 39", raw)
    fields: tuple[Gs1Field, ...] = ()
    if result.gs1_message is not None:
        fields = tuple(Gs1Field(e.ai.ai, e.value, e.ai.data_title) for e in result.gs1_message.element_strings)
    elif symbology in _GS1_DATA:
        raise ScanRejected(f"bad GS1 data in {symbology.value}: {result.gs1_message_error}", raw)
    return Scan(data=data, symbology=symbology, aim=aim, fields=fields,
                gtin=result.gtin.value if result.gtin else None,
                sscc=result.sscc.value if result.sscc else None)
