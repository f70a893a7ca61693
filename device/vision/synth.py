"""Synthetic delivery photos with a house number on a door, wall, plaque or mailbox, plus clutter.

Used by the training script (tools/train_housenumbers.py), the tests and the bench: importable without
TensorFlow. Everything comes from a seeded `numpy.random.Generator`, so a seed gives the same photos.
Fonts come from Debian packages (fonts-dejavu-core, fonts-liberation, fonts-freefont-ttf, fonts-urw-base35).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/truetype/liberation",
    "/usr/share/fonts/truetype/freefont",
    "/usr/share/fonts/opentype/urw-base35",
)
# Symbol, dingbat, maths and script faces have no readable digits.
EXCLUDED_FONT_WORDS = ("Math", "Symbol", "D050000L", "Z003", "Fallback")
SUFFIXES = "ABCDEF"
PHOTO_SIZE = (640, 480)  # width, height of a rendered photo
CLUTTER_WORDS = ("PARCEL", "FRAGILE", "THIS WAY UP", "NO ADVERTS", "WELCOME", "POST", "LETTERS", "KEEP DRY",
                 "HANDLE WITH CARE", "BELL", "PUSH", "PULL", "PRIVATE", "MAIL", "HOME")


class FontsMissing(RuntimeError):
    """No usable fonts: install the Debian font packages (tools/bootstrap.sh does)."""


@dataclass(frozen=True)
class SynthPhoto:
    image: np.ndarray  # H x W x 3 uint8 RGB
    text: str  # the house number shown, "" when the photo shows none
    box: tuple[int, int, int, int] | None  # x0, y0, x1, y1 of the number's glyphs in the photo


@lru_cache(maxsize=1)
def font_paths() -> tuple[str, ...]:
    paths = []
    for folder in FONT_DIRS:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix.lower() in (".ttf", ".otf") and not any(w in path.name for w in EXCLUDED_FONT_WORDS):
                paths.append(str(path))
    if not paths:
        raise FontsMissing("no fonts in " + ", ".join(FONT_DIRS) + ": apt-get install fonts-dejavu-core "
                           "fonts-liberation fonts-freefont-ttf fonts-urw-base35")
    return tuple(paths)


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def random_house_number(rng: np.random.Generator) -> str:
    digits = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.4, 0.3, 0.1]))
    number = str(int(rng.integers(1, 10))) + "".join(str(int(d)) for d in rng.integers(0, 10, digits - 1))
    if rng.random() < 0.15:
        number += SUFFIXES[int(rng.integers(len(SUFFIXES)))]
    return number


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _luma(c: tuple[int, ...]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _contrasting(rng: np.random.Generator, background: tuple[int, ...], min_diff: float = 90.0) -> tuple[int, ...]:
    for _ in range(30):
        c = _colour(rng)
        if abs(_luma(c) - _luma(background)) >= min_diff:
            return c
    return (0, 0, 0) if _luma(background) > 127 else (255, 255, 255)


def _wall(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    base = np.array(_colour(rng, 30, 240), dtype=np.float32)
    kind = int(rng.integers(4))
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    if kind == 0:  # brick courses
        course = int(rng.integers(14, 40))
        brick = course * int(rng.integers(2, 4))
        mortar = np.array(_colour(rng, 120, 230), np.float32)
        for row, y in enumerate(range(0, h, course)):
            shade = rng.normal(0, 12, 3)
            img[y:y + course] += shade
            img[y:y + 2] = mortar
            offset = (brick // 2) * (row % 2)
            for x in range(offset, w, brick):
                img[y:y + course, x:x + 2] = mortar
    elif kind == 1:  # wooden planks / door grain
        stripes = rng.normal(0, 18, w).astype(np.float32)
        stripes = cv2.GaussianBlur(stripes.reshape(1, -1), (0, 0), float(rng.uniform(1, 4))).reshape(-1)
        img += stripes[None, :, None]
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img.transpose(1, 0, 2))
            img = cv2.resize(img, (w, h))
    elif kind == 2:  # render / stucco
        noise = rng.normal(0, 1, (h // 4 + 1, w // 4 + 1)).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR) * float(rng.uniform(5, 20))
        img += noise[:, :, None]
    img += rng.normal(0, float(rng.uniform(1, 6)), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int, fonts: tuple[str, ...]) -> None:
    for _ in range(int(rng.integers(2, 9))):
        kind = int(rng.integers(6))
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
        colour = _colour(rng)
        if kind == 0:  # window / door frame
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=int(rng.integers(2, 12)))
        elif kind == 1:  # parcel box with a label and a barcode
            draw.rectangle((x0, y0, x1, y1), fill=(int(rng.integers(140, 200)), int(rng.integers(100, 150)), 70))
            lx, ly = x0 + (x1 - x0) // 4, y0 + (y1 - y0) // 4
            draw.rectangle((lx, ly, lx + (x1 - x0) // 2, ly + (y1 - y0) // 3), fill=(245, 245, 240))
            for bx in range(lx + 4, lx + (x1 - x0) // 2 - 4, 3):
                if rng.random() < 0.5:
                    draw.line((bx, ly + 4, bx, ly + (y1 - y0) // 3 - 4), fill=(10, 10, 10),
                              width=int(rng.integers(1, 3)))
        elif kind == 2:  # lamp, knob, bell
            draw.ellipse((x0, y0, x0 + (x1 - x0) // 3, y0 + (x1 - x0) // 3), fill=colour)
        elif kind == 3:  # pipes, cables, edges
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 10)))
        elif kind == 4:  # words without digits (stickers, signs)
            font = _font(fonts[int(rng.integers(len(fonts)))], int(rng.integers(10, 40)))
            word = CLUTTER_WORDS[int(rng.integers(len(CLUTTER_WORDS)))]
            draw.text((x0, y0), word, fill=colour, font=font)
        else:  # plant / shadow blob
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng, 0, 120))


def _plaque_layer(rng: np.random.Generator, text: str, wall_colour: tuple[int, ...], fonts: tuple[str, ...],
                  text_h: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """An RGBA layer: the number on a plaque (or straight on the surface); returns it and the glyph box."""
    font = _font(fonts[int(rng.integers(len(fonts)))], max(8, text_h))
    spacing = int(rng.integers(-1, 3)) * max(1, text_h // 12)
    glyph_boxes, x = [], 0
    for ch in text:
        left, top, right, bottom = font.getbbox(ch)
        glyph_boxes.append((x, left, top, right, bottom))
        x += int(font.getlength(ch)) + spacing
    tx0 = min(gx + left for gx, left, _, _, _ in glyph_boxes)
    tx1 = max(gx + right for gx, _, _, right, _ in glyph_boxes)
    ty0 = min(top for _, _, top, _, _ in glyph_boxes)
    ty1 = max(bottom for _, _, _, _, bottom in glyph_boxes)
    tw, th = tx1 - tx0, ty1 - ty0
    pad_x = int(th * rng.uniform(0.2, 0.9))
    pad_y = int(th * rng.uniform(0.15, 0.6))
    lw, lh = tw + 2 * pad_x, th + 2 * pad_y
    layer = Image.new("RGBA", (lw, lh), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    style = int(rng.integers(5))
    background = wall_colour
    if style <= 2:  # a plaque: rectangle, rounded, oval
        background = _colour(rng)
        shape = (0, 0, lw - 1, lh - 1)
        border = _contrasting(rng, background, 40) if rng.random() < 0.5 else None
        width = int(rng.integers(1, max(2, th // 8)))
        if style == 0:
            draw.rectangle(shape, fill=background, outline=border, width=width)
        elif style == 1:
            draw.rounded_rectangle(shape, radius=int(min(lw, lh) * 0.25), fill=background, outline=border, width=width)
        else:
            draw.ellipse(shape, fill=background, outline=border, width=width)
    fill = _contrasting(rng, background)
    origin_x, origin_y = pad_x - tx0, pad_y - ty0
    stroke = int(rng.integers(0, 2)) * max(1, th // 25) if rng.random() < 0.3 else 0
    for (gx, _, _, _, _), ch in zip(glyph_boxes, text):
        draw.text((origin_x + gx, origin_y), ch, font=font, fill=fill + (255,), stroke_width=stroke,
                  stroke_fill=fill + (255,))
    box = (pad_x - stroke, pad_y - stroke, pad_x + tw + stroke, pad_y + th + stroke)
    return layer, box


def _warp(rng: np.random.Generator, layer: Image.Image, box: tuple[int, int, int, int]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Rotate and perspective-warp the layer; returns the warped RGBA array and the glyph box corners."""
    lw, lh = layer.size
    angle = math.radians(float(rng.normal(0, 5)))
    shear = float(rng.normal(0, 0.08))
    squeeze = float(rng.uniform(0.0, 0.18))  # one side further from the camera
    src = np.float32([[0, 0], [lw, 0], [lw, lh], [0, lh]])
    dst = src.copy()
    if rng.random() < 0.5:
        dst[1, 1] += squeeze * lh / 2
        dst[2, 1] -= squeeze * lh / 2
    else:
        dst[0, 1] += squeeze * lh / 2
        dst[3, 1] -= squeeze * lh / 2
    dst[:, 0] += shear * (dst[:, 1] - lh / 2)
    c, s = math.cos(angle), math.sin(angle)
    centre = np.float32([lw / 2, lh / 2])
    dst = (dst - centre) @ np.float32([[c, s], [-s, c]]) + centre
    margin = dst.min(axis=0)
    dst -= margin
    out_w, out_h = (int(v) + 2 for v in dst.max(axis=0))
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    warped = cv2.warpPerspective(np.asarray(layer), matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    x0, y0, x1, y1 = box
    corners = np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]])
    return warped, cv2.perspectiveTransform(corners, matrix)[0]


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    # Uneven light: a gradient and sometimes a hard shadow edge.
    gx = np.linspace(float(rng.uniform(0.5, 1.2)), float(rng.uniform(0.5, 1.2)), w, dtype=np.float32)
    gy = np.linspace(float(rng.uniform(0.6, 1.2)), float(rng.uniform(0.6, 1.2)), h, dtype=np.float32)
    out *= (gy[:, None] * gx[None, :])[:, :, None]
    if rng.random() < 0.25:
        x_edge = int(rng.integers(0, w))
        out[:, x_edge:] *= float(rng.uniform(0.45, 0.8))
    out = out * float(rng.uniform(0.75, 1.25)) + float(rng.normal(0, 15))
    out += rng.normal(0, float(rng.uniform(1, 8)), out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    sigma = float(rng.choice([0.0, 0.6, 1.0, 1.6], p=[0.3, 0.3, 0.25, 0.15]))
    if sigma:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    if rng.random() < 0.15:  # hand shake
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        out = cv2.filter2D(out, -1, cv2.warpAffine(kernel, rot, (k, k)))
    buf = io.BytesIO()
    Image.fromarray(out).save(buf, "JPEG", quality=int(rng.integers(40, 95)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def render_photo(rng: np.random.Generator, text: str | None = None, size: tuple[int, int] = PHOTO_SIZE,
                 with_number: bool = True) -> SynthPhoto:
    """One photo; `text` defaults to a random house number (digits, sometimes a letter suffix)."""
    fonts = font_paths()
    w, h = size
    wall = _wall(rng, w, h)
    wall_colour = tuple(int(v) for v in wall.reshape(-1, 3).mean(axis=0))
    canvas = Image.fromarray(wall)
    _clutter(rng, ImageDraw.Draw(canvas), w, h, fonts)
    if not with_number:
        return SynthPhoto(_degrade(rng, np.asarray(canvas)), "", None)
    text = text or random_house_number(rng)
    text_h = int(h * rng.uniform(0.07, 0.22))
    layer, glyph_box = _plaque_layer(rng, text, wall_colour, fonts, text_h)
    warped, corners = _warp(rng, layer, glyph_box)
    ph, pw = warped.shape[:2]
    if pw >= w - 4 or ph >= h - 4:  # too wide for the photo: scale the layer down
        scale = min((w - 8) / pw, (h - 8) / ph)
        warped = cv2.resize(warped, (max(1, int(pw * scale)), max(1, int(ph * scale))), interpolation=cv2.INTER_AREA)
        corners = corners * scale
        ph, pw = warped.shape[:2]
    ox, oy = int(rng.integers(0, w - pw)), int(rng.integers(0, h - ph))
    if rng.random() < 0.3:  # a drop shadow under the plaque
        shadow = Image.fromarray((warped[:, :, 3] * 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(3))
        canvas.paste((0, 0, 0), (ox + 3, oy + 3), shadow)
    canvas.paste(Image.fromarray(warped), (ox, oy), Image.fromarray(warped))
    corners = corners + np.float32([ox, oy])
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    box = (max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))
    return SynthPhoto(_degrade(rng, np.asarray(canvas)), text, box)


def jpeg_bytes(photo: SynthPhoto, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo.image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
