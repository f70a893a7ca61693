"""Barcodes in a photo: zbar (pyzbar) first, then zxing-cpp for what zbar cannot read.

zbar reads no Data Matrix and no PDF417 (both common on parcel labels), reports UPC-A as EAN-13 with a
leading 0, and decodes non-ASCII Code 128 / QR text in the wrong character set. zxing-cpp reads all of
these, so both run: a zxing-cpp result on the same spot as a zbar result of the same symbology replaces
zbar's text only when they disagree (zxing-cpp honours ECI/character sets); new symbols are added.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import zxingcpp
from pyzbar import pyzbar

from device.vision.image import DEFAULT_MAX_MEGAPIXELS, ImageSource, LoadedImage, load_image

log = logging.getLogger(__name__)

BARCODE_WORK_SIDE = 4096  # dense PDF417/Data Matrix need the pixels: decode near full resolution

# zbar type names -> the names zxing-cpp uses, so both decoders report one vocabulary.
ZBAR_NAMES = {
    "EAN13": "EAN-13", "EAN8": "EAN-8", "UPCA": "UPC-A", "UPCE": "UPC-E", "ISBN10": "ISBN-10",
    "ISBN13": "ISBN-13", "CODE128": "Code 128", "CODE39": "Code 39", "CODE93": "Code 93", "I25": "ITF",
    "CODABAR": "Codabar", "QRCODE": "QR Code", "DATABAR": "DataBar", "DATABAR_EXP": "DataBar Expanded",
    "PDF417": "PDF417", "EAN2": "EAN-2", "EAN5": "EAN-5",
}
# zxing-cpp variants reported under the family name zbar uses, so one symbol is one result.
ZXING_FAMILIES = {"DataBar Omni": "DataBar", "DataBar Stacked": "DataBar", "DataBar Stacked Omni": "DataBar",
                  "DataBar Limited": "DataBar", "DataBar Expanded Stacked": "DataBar Expanded"}


@dataclass(frozen=True)
class Barcode:
    symbology: str  # "EAN-13", "Code 128", "QR Code", "Data Matrix", "PDF417", ...
    data: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the photo's pixels
    decoder: str  # "zbar" or "zxing-cpp"

    def to_dict(self) -> dict[str, object]:
        return {"symbology": self.symbology, "data": self.data, "box": list(self.box), "decoder": self.decoder}


def _normalise(symbology: str, data: str) -> tuple[str, str]:
    # UPC-A is EAN-13 with a leading 0 (GS1): report the 12-digit UPC-A the label carries.
    if symbology == "EAN-13" and len(data) == 13 and data.startswith("0"):
        return "UPC-A", data[1:]
    return symbology, data


def _zbar(gray: np.ndarray) -> list[Barcode]:
    found = []
    h, w = gray.shape[:2]
    for symbol in pyzbar.decode((gray.tobytes(), w, h)):
        name = ZBAR_NAMES.get(symbol.type, symbol.type)
        symbology, data = _normalise(name, symbol.data.decode("utf-8", errors="replace"))
        r = symbol.rect
        found.append(Barcode(symbology, data, (r.left, r.top, r.left + r.width, r.top + r.height), "zbar"))
    return found


def _zxing(gray: np.ndarray) -> list[Barcode]:
    found = []
    # Plain text mode: the data as encoded (GS1 without "(01)" brackets), like zbar gives it.
    for result in zxingcpp.read_barcodes(gray, text_mode=zxingcpp.TextMode.Plain):
        p = result.position
        xs = [p.top_left.x, p.top_right.x, p.bottom_right.x, p.bottom_left.x]
        ys = [p.top_left.y, p.top_right.y, p.bottom_right.y, p.bottom_left.y]
        name = str(result.format)
        symbology, data = _normalise(ZXING_FAMILIES.get(name, name), result.text)
        found.append(Barcode(symbology, data, (min(xs), min(ys), max(xs), max(ys)), "zxing-cpp"))
    return found


def _same_spot(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int = 10) -> bool:
    """Boxes touch (zxing-cpp gives a linear code's position as a thin line, hence the margin)."""
    return (min(a[2], b[2]) + margin >= max(a[0], b[0]) - margin and
            min(a[3], b[3]) + margin >= max(a[1], b[1]) - margin)


def _scaled(code: Barcode, factor: float) -> Barcode:
    if factor == 1.0:
        return code
    x0, y0, x1, y1 = (int(round(v * factor)) for v in code.box)
    return Barcode(code.symbology, code.data, (x0, y0, x1, y1), code.decoder)


def decode(image: ImageSource | LoadedImage, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> list[Barcode]:
    """All barcodes found; raises ImageError for a bad photo."""
    loaded = image if isinstance(image, LoadedImage) else load_image(
        image, max_megapixels=max_megapixels, work_side=BARCODE_WORK_SIDE)
    results = _zbar(loaded.gray)
    for extra in _zxing(loaded.gray):
        same = [i for i, r in enumerate(results) if r.symbology == extra.symbology and _same_spot(r.box, extra.box)]
        if not same and not any(r.symbology == extra.symbology and r.data == extra.data for r in results):
            results.append(extra)
        for index in same:
            if results[index].data != extra.data:
                log.info("zbar read %s %r, zxing-cpp %r: using zxing-cpp", extra.symbology, results[index].data,
                         extra.data)
                results[index] = extra
    return [_scaled(r, 1.0 / loaded.scale) for r in results]
