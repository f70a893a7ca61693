"""Load a photo (path, bytes or array) into RGB and grey arrays, with clear errors for bad input.

Large JPEGs are decoded at a reduced scale (libjpeg DCT scaling via Pillow's draft mode): the check never
needs more than `work_side` pixels on the long side, and boxes are reported in the photo's own pixels.
"""
from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.vision.errors import ImageError

log = logging.getLogger(__name__)

MIN_SIDE = 32  # smaller than this cannot show a readable number
DEFAULT_MAX_MEGAPIXELS = 40.0  # the Pi HQ camera gives 12.3 MP; bigger is a wrong or hostile file
DEFAULT_WORK_SIDE = 1280  # long side the check works at

ImageSource = str | Path | bytes | np.ndarray


@dataclass(frozen=True)
class LoadedImage:
    rgb: np.ndarray  # H x W x 3 uint8, at working scale
    gray: np.ndarray  # H x W uint8
    width: int  # the photo's own size
    height: int

    @property
    def scale(self) -> float:
        """Working pixels per photo pixel."""
        return float(self.gray.shape[1] / self.width)


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<array {getattr(source, 'shape', '?')}>"


def _check_size(name: str, width: int, height: int, max_megapixels: float) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ImageError(name, "too_small", f"image is {width}x{height}, need at least {MIN_SIDE}x{MIN_SIDE}")
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise ImageError(name, "too_large", f"image is {width}x{height} ({megapixels:.1f} MP), "
                                            f"limit {max_megapixels:g} MP (vision.max_megapixels)")


def _from_array(name: str, array: np.ndarray, max_megapixels: float, work_side: int) -> LoadedImage:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ImageError(name, "bad_array", "expected a uint8 array of H x W or H x W x 3")
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ImageError(name, "bad_array", f"expected 3 or 4 channels, got {array.shape[2]}")
    height, width = array.shape[:2]
    _check_size(name, width, height, max_megapixels)
    img = Image.fromarray(array).convert("RGB") if array.ndim == 2 else Image.fromarray(array[:, :, :3])
    return _finish(img, width, height, work_side)


def _finish(img: Image.Image, width: int, height: int, work_side: int) -> LoadedImage:
    w, h = img.size
    factor = work_side / max(w, h)
    if factor < 1.0:  # BOX: each working pixel the mean of the photo pixels under it (no aliasing)
        img = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BOX)
    return LoadedImage(np.asarray(img), np.asarray(img.convert("L")), width, height)  # L: ITU-R 601 luma


def load_image(source: ImageSource, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
               work_side: int = DEFAULT_WORK_SIDE) -> LoadedImage:
    """Decode and size-check a photo. Raises ImageError (never a Pillow error) for bad input."""
    name = _describe(source)
    if isinstance(source, np.ndarray):
        return _from_array(name, source, max_megapixels, work_side)
    try:
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
    except OSError as exc:
        raise ImageError(name, "unreadable_file", f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError(name, "empty", "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                _check_size(name, width, height, max_megapixels)
                if img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still gives work_side
                    factor = work_side / max(width, height)
                    img.draft("RGB", (max(1, int(width * factor)), max(1, int(height * factor))))
                turned = ImageOps.exif_transpose(img)  # camera orientation tag: boxes in upright pixels
                if turned.size != img.size:
                    width, height = height, width
                if turned.mode in ("P", "PA", "LA"):  # palette transparency must go through RGBA first
                    turned = turned.convert("RGBA")
                decoded = turned.convert("RGB")
                decoded.load()  # decode now, inside the error handling
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(name, "too_large", f"image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(name, "not_an_image", "not an image file Pillow can read") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's corrupt/truncated data errors
        raise ImageError(name, "corrupt", f"corrupt or truncated image: {exc}") from exc
    return _finish(decoded, width, height, work_side)
