"""An independent generator of door photos for evaluating the house-number check.

Written apart from device/vision/synth.py (the training renderer) and sharing no code with it: other
typefaces (Debian font packages training never uses, FONT_PACKAGES), other backgrounds (real photographs
shipped inside scikit-image and gnome-backgrounds, plus plaster, planks and stone drawn here), and the door
styles couriers meet: brass numerals, enamel plaques, painted tiles, vinyl stickers on mailboxes, numbers
painted on kerbs, plain metal numerals; numbers small in a wide frame, glare, dusk with flash, motion and
focus blur, cheap optics (barrel distortion, colour fringes, vignetting, noise, JPEG). Photos are
2304x1296 JPEGs, like a Camera Module 3 binned frame.

Background licences: scikit-image data (BSD-3-Clause package; the photographs are public domain or CC0,
see skimage/data/README.txt), gnome-backgrounds (CC-BY-SA 3.0 / CC-BY 2.0, see its Debian copyright file).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = (2304, 1296)
FONT_PACKAGES = ("fonts-lato", "fonts-open-sans", "fonts-cantarell", "fonts-crosextra-carlito",
                 "fonts-crosextra-caladea", "fonts-comfortaa", "fonts-roboto-unhinted", "fonts-b612",
                 "fonts-hack", "fonts-league-spartan", "fonts-jura", "fonts-quicksand", "fonts-ebgaramond",
                 "fonts-sil-andika")
FONT_DIRS = ("truetype/lato", "truetype/open-sans", "opentype/cantarell", "truetype/crosextra",
             "truetype/comfortaa", "truetype/roboto", "opentype/b612", "truetype/hack", "opentype/league-spartan",
             "opentype/jura", "truetype/quicksand", "opentype/ebgaramond", "truetype/andika")
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
                  "gravel.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "hubble_deep_field.jpg")
GNOME_PHOTOS = ("wood-l.webp", "wood-d.webp")
STYLES = ("brass", "enamel", "tiles", "sticker", "kerb", "plain")
SUFFIXES = "ABCDEF"


@dataclass(frozen=True)
class DoorPhoto:
    jpeg: bytes
    text: str
    style: str
    box: tuple[int, int, int, int]  # the numerals' bounding box in photo pixels
    conditions: tuple[str, ...]


def font_files(root: Path = Path("/usr/share/fonts")) -> list[Path]:
    fonts = sorted(p for d in FONT_DIRS for p in (root / d).rglob("*") if p.suffix in (".ttf", ".otf")
                   and "Thin" not in p.name and "Hairline" not in p.name and "Light" not in p.name)
    if not fonts:
        raise RuntimeError("no evaluation typefaces: apt-get install " + " ".join(FONT_PACKAGES))
    return fonts


def background_photos(with_skimage: bool = True) -> list[np.ndarray]:
    """The real photographs available here (RGB uint8); none is an error only if no source is installed. The set
    of photos a seed gives depends on which are installed: scikit-image comes with the `bench` extra only, so
    the tests ask for the photographs without it (the same photos with or without the extra installed)."""
    found = []
    try:
        if with_skimage:
            import skimage
            folder = Path(skimage.__file__).parent / "data"
            found += [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]
    except ImportError:
        pass
    gnome = Path("/usr/share/backgrounds/gnome")
    found += [gnome / name for name in GNOME_PHOTOS if (gnome / name).is_file()]
    return [np.asarray(Image.open(p).convert("RGB")) for p in found]


def house_number(rng: np.random.Generator) -> str:
    digits = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.4, 0.3, 0.1]))
    text = str(int(rng.integers(1, 10))) + "".join(str(int(d)) for d in rng.integers(0, 10, digits - 1))
    return text + (SUFFIXES[int(rng.integers(len(SUFFIXES)))] if rng.random() < 0.15 else "")


class DoorGenerator:
    def __init__(self, seed: int, photos: list[np.ndarray] | None = None) -> None:
        """photos: the background photographs (default: every one installed, background_photos())."""
        self.rng = np.random.default_rng(seed)
        self.fonts = font_files()
        self.photos = background_photos() if photos is None else photos

    # -- surfaces ----------------------------------------------------------------------------------------
    def _surface(self, size: tuple[int, int]) -> np.ndarray:
        rng, (w, h) = self.rng, size
        kind = rng.choice(["photo", "plaster", "planks", "stone"], p=[0.4, 0.25, 0.2, 0.15]) if self.photos \
            else rng.choice(["plaster", "planks", "stone"])
        if kind == "photo":
            src = self.photos[int(rng.integers(len(self.photos)))]
            sh, sw = src.shape[:2]
            cw = int(sw * rng.uniform(0.4, 1.0))
            ch = min(sh, int(cw * h / w))
            x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
            out = cv2.resize(src[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
            return cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 3.0)))  # out of focus behind the door
        base = rng.integers(60, 235, 3).astype(np.float32)
        small = rng.normal(0, 1, (h // 16 + 1, w // 16 + 1)).astype(np.float32)
        noise = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * rng.uniform(4, 14)
        img = np.broadcast_to(base, (h, w, 3)) + noise + rng.normal(0, 3, (h, w, 1))
        if kind == "planks":
            pitch = int(rng.integers(90, 260))
            cols = (np.arange(w) % pitch)
            grain = np.sin(np.arange(w) / rng.uniform(3, 9)) * 5
            img = img * (1 - 0.35 * (cols < 6))[None, :, None] + grain[None, :, None]
        elif kind == "stone":
            bh, bw = int(rng.integers(70, 160)), int(rng.integers(180, 420))
            rows = np.arange(h)[:, None]
            shift = ((rows // bh) % 2) * (bw // 2)
            mortar = ((rows % bh) < 8) | (((np.arange(w)[None, :] + shift) % bw) < 8)
            tint = rng.uniform(0.8, 1.1, ((h // bh) + 2, 1, 1))
            img = img * np.repeat(tint, bh, axis=0)[:h] * np.where(mortar, 0.6, 1.0)[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)

    # -- the numerals on their plaque --------------------------------------------------------------------
    def _glyph_layer(self, text: str, height: int, style: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
        """RGBA plaque with the number; returns it and the numerals' box inside it."""
        rng = self.rng
        font = ImageFont.truetype(str(self.fonts[int(rng.integers(len(self.fonts)))]), height)
        spacing = int(height * (rng.uniform(0.25, 0.5) if style in ("tiles", "sticker") else rng.uniform(0.0, 0.12)))
        boxes = [font.getbbox(ch) for ch in text]
        widths = [b[2] - b[0] for b in boxes]
        text_w = sum(widths) + spacing * (len(text) - 1)
        top = min(b[1] for b in boxes)
        bottom = max(b[3] for b in boxes)
        pad = int(height * rng.uniform(0.35, 0.8))
        W, H = text_w + 2 * pad, bottom - top + 2 * pad
        plaque = Image.new("RGBA", (W, H), (0, 0, 0, 0))
        draw = ImageDraw.Draw(plaque)
        ink, fill = self._colours(style)
        if style == "enamel":
            draw.rounded_rectangle((0, 0, W - 1, H - 1), radius=int(min(W, H) * rng.uniform(0.1, 0.5)), fill=fill)
            inset = max(3, pad // 4)
            draw.rounded_rectangle((inset, inset, W - 1 - inset, H - 1 - inset), radius=int(min(W, H) * 0.1),
                                   outline=ink, width=max(2, height // 25))
        elif style == "kerb":
            draw.rectangle((0, 0, W - 1, H - 1), fill=fill)
        elif style == "sticker":
            pass  # each numeral is its own sticker on the mailbox: no plaque
        mask = Image.new("L", (W, H), 0)
        mdraw = ImageDraw.Draw(mask)
        x = pad
        for ch, b, cw in zip(text, boxes, widths):
            dy = int(rng.normal(0, height * 0.03)) if style == "sticker" else 0
            if style == "tiles":
                t = int(height * 0.18)
                draw.rectangle((x - t, pad - t, x + cw + t, H - pad + t), fill=fill)
            mdraw.text((x - b[0], pad - top + dy), ch, font=font, fill=255)
            x += cw + spacing
        glyph_box = (pad, pad, pad + text_w, H - pad)
        if style == "kerb":  # worn paint: holes in the numerals
            holes = (rng.random((H, W)) < 0.02).astype(np.uint8) * 255
            holes = cv2.dilate(holes, np.ones((3, 3), np.uint8))
            mask = Image.fromarray(np.minimum(np.asarray(mask), 255 - holes))
        if style in ("brass", "plain"):  # raised numerals: a soft shadow below-right
            shadow = mask.filter(ImageFilter.GaussianBlur(max(1, height // 20)))
            off = max(2, height // 18)
            shade = Image.new("RGBA", (W, H), (0, 0, 0, 0))
            shade.putalpha(shadow.point(lambda v: int(v * 0.6)))
            plaque.alpha_composite(shade, (off, off))
        colour = self._ink_image(style, ink, (W, H))
        colour.putalpha(mask)
        plaque.alpha_composite(colour)
        return plaque, glyph_box

    def _colours(self, style: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        rng = self.rng
        if style == "enamel":
            fill = [(20, 60, 150), (25, 100, 60), (150, 25, 30), (240, 240, 235), (30, 30, 35)][int(rng.integers(5))]
            ink = (245, 245, 245) if sum(fill) < 400 else (20, 40, 120)
        elif style == "tiles":
            fill, ink = (238, 234, 222), [(30, 60, 160), (20, 20, 20), (120, 30, 30)][int(rng.integers(3))]
        elif style == "kerb":
            fill, ink = (236, 236, 230), (15, 15, 15)
        else:
            fill = (0, 0, 0)
            ink = [(250, 250, 250), (15, 15, 15), (200, 160, 60)][int(rng.integers(3))] if style == "sticker" \
                else (0, 0, 0)
        return ink + (255,), fill + (255,)

    def _ink_image(self, style: str, ink: tuple[int, ...], size: tuple[int, int]) -> Image.Image:
        w, h = size
        ramp = np.linspace(0, 1, h)[:, None, None]
        if style == "brass":
            dark, light = np.array([120, 85, 35]), np.array([245, 215, 140])
            band = np.abs(np.sin(ramp * math.pi * self.rng.uniform(1, 2.5)))
            arr = dark + (light - dark) * band
        elif style == "plain":
            base = self.rng.choice([40, 150, 200, 230])
            arr = np.full((h, 1, 3), float(base)) + 25 * np.cos(ramp * math.pi * 2)
        else:
            arr = np.full((h, 1, 3), ink[:3], np.float64)
        arr = np.broadcast_to(np.clip(arr, 0, 255), (h, w, 3)).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(arr)).convert("RGBA")

    # -- the scene ---------------------------------------------------------------------------------------
    def photo(self, text: str | None = None, style: str | None = None) -> DoorPhoto:
        rng = self.rng
        text = text or house_number(rng)
        style = style or str(rng.choice(STYLES))
        w, h = SIZE
        scene = self._surface((w, h)).astype(np.float32)
        conditions = []
        # a door or wall panel in front of the background, the number on it
        dx0, dy0 = int(rng.uniform(0.05, 0.45) * w), int(rng.uniform(0.0, 0.3) * h)
        dx1, dy1 = dx0 + int(rng.uniform(0.3, 0.55) * w), dy0 + int(rng.uniform(0.6, 1.0) * h)
        panel = self._surface((max(1, min(w, dx1) - dx0), max(1, min(h, dy1) - dy0))).astype(np.float32)
        if style == "sticker":
            panel = panel * 0.3 + np.array(rng.choice([[170, 30, 30], [40, 90, 50], [90, 95, 100], [30, 30, 30]]))
        scene[dy0:dy0 + panel.shape[0], dx0:dx0 + panel.shape[1]] = np.clip(panel, 0, 255)
        size_kind = rng.random()
        height = int(np.exp(rng.uniform(np.log(28), np.log(70)))) if size_kind < 0.3 else \
            int(np.exp(rng.uniform(np.log(70), np.log(260))))
        if height < 70:
            conditions.append("small")
        plaque, (gx0, gy0, gx1, gy1) = self._glyph_layer(text, height, style)
        pw, ph = plaque.size
        scale = min(1.0, 0.8 * w / pw, 0.8 * h / ph)
        pw2, ph2 = pw * scale, ph * scale
        cx = rng.uniform(pw2 / 2 + 10, w - pw2 / 2 - 10)
        cy = rng.uniform(ph2 / 2 + 10, h - ph2 / 2 - 10)
        angle = math.radians(rng.normal(0, 4))
        tilt = 0.45 if style == "kerb" else 0.12  # kerbs are seen from above: strong foreshortening
        corners = np.array([[-pw2 / 2, -ph2 / 2], [pw2 / 2, -ph2 / 2], [pw2 / 2, ph2 / 2], [-pw2 / 2, ph2 / 2]])
        k = rng.uniform(0, tilt)
        corners[:2, 0] *= 1 - k  # top edge narrower: seen from below/above
        corners[:, 0] *= 1 + rng.uniform(-0.1, 0.1) * np.array([1, -1, -1, 1])
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        quad = (corners @ rot.T + [cx, cy]).astype(np.float32)
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
        homography = cv2.getPerspectiveTransform(src, quad)
        warped = cv2.warpPerspective(np.asarray(plaque), homography, (w, h), flags=cv2.INTER_LINEAR)
        alpha = warped[..., 3:4].astype(np.float32) / 255
        scene = scene * (1 - alpha) + warped[..., :3].astype(np.float32) * alpha
        pts = cv2.perspectiveTransform(np.array([[[gx0, gy0], [gx1, gy0], [gx1, gy1], [gx0, gy1]]], np.float32),
                                       homography)[0]
        box = (int(pts[:, 0].min()), int(pts[:, 1].min()), int(math.ceil(pts[:, 0].max())),
               int(math.ceil(pts[:, 1].max())))
        scene, more = self._light_and_optics(scene, box)
        conditions += more
        quality = int(rng.integers(55, 93))
        buf = io.BytesIO()
        Image.fromarray(scene).save(buf, "JPEG", quality=quality)
        return DoorPhoto(buf.getvalue(), text, style, box, tuple(conditions))

    def _light_and_optics(self, scene: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, list[str]]:
        rng = self.rng
        h, w = scene.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        conditions = []
        if rng.random() < 0.25:  # glare: a specular blob near the number
            conditions.append("glare")
            gx = rng.uniform(box[0], box[2])
            gy = rng.uniform(box[1], box[3])
            r = (box[3] - box[1]) * rng.uniform(0.4, 1.2)
            blob = np.exp(-(((xx - gx) / (r * rng.uniform(1, 2.5))) ** 2 + ((yy - gy) / r) ** 2))
            scene = scene + blob[..., None] * rng.uniform(90, 200)
        if rng.random() < 0.2:  # dusk with flash: dark, bright centre falling off, noisy
            conditions.append("dusk_flash")
            d2 = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
            scene = scene * rng.uniform(0.25, 0.5) * (1 + 1.8 * np.exp(-d2 * rng.uniform(4, 10)))[..., None]
            scene = scene + rng.normal(0, rng.uniform(4, 9), scene.shape)
        else:
            light = 1 + rng.uniform(-0.25, 0.25) * ((xx / w - 0.5) + (yy / h - 0.5))
            scene = scene * light[..., None] * rng.uniform(0.75, 1.2)
        scene = np.clip(scene, 0, 255).astype(np.uint8)
        if rng.random() < 0.25:
            conditions.append("motion_blur")
            n = int(rng.integers(5, 16))
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2] = 1 / n
            rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1)
            kernel = cv2.warpAffine(kernel, rot, (n, n))
            scene = cv2.filter2D(scene, -1, kernel / max(kernel.sum(), 1e-6))
        elif rng.random() < 0.3:
            conditions.append("focus_blur")
            scene = cv2.GaussianBlur(scene, (0, 0), float(rng.uniform(1.5, 3.5)))
        if rng.random() < 0.5:  # cheap optics: barrel distortion, colour fringes, vignetting
            conditions.append("cheap_optics")
            k = rng.uniform(0.02, 0.08)
            nx, ny = (xx - w / 2) / (w / 2), (yy - h / 2) / (w / 2)
            f = 1 + k * (nx ** 2 + ny ** 2)
            scene = cv2.remap(scene, (nx * f * w / 2 + w / 2).astype(np.float32),
                              (ny * f * w / 2 + h / 2).astype(np.float32), cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
            shift = int(rng.integers(1, 4))
            scene[..., 0] = np.roll(scene[..., 0], shift, axis=1)
            scene[..., 2] = np.roll(scene[..., 2], -shift, axis=1)
            vignette = 1 - 0.35 * (nx ** 2 + ny ** 2)
            scene = np.clip(scene * vignette[..., None] + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
        return scene, conditions
