"""Pixel operations the check needs, on Pillow and numpy: resize, grey, Laplacian, connected regions.

No OpenCV in the agent: importing cv2 alone costs about 33 MB of resident memory, more than the rest of
the vision stack, and the check uses only these few operations. (OpenCV stays for rendering synthetic
training photos, `device.vision.synth`, which the running agent never imports.)
"""
from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from PIL import Image


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 grey/RGB or float32 grey array to size (w, h): averaging pixels when shrinking
    (no aliasing), bilinear when enlarging."""
    h, w = array.shape[:2]
    if (w, h) == size:
        return array
    shrinking = size[0] <= w and size[1] <= h
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize(size, resample))


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, the same weights as OpenCV's RGB2GRAY."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a uint8 grey image, edges mirrored without repeating the edge
    pixel (OpenCV's default border, so the sharpness figures keep their meaning). In exact integers: the
    Laplacian of uint8 fits int16, its squares int32."""
    p = np.pad(gray, 1, mode="reflect").astype(np.int16)
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    n = lap.size
    total = int(lap.sum(dtype=np.int64))
    squares = int(np.einsum("ij,ij->", lap, lap, dtype=np.int64))
    return (squares - total * total / n) / n


@dataclass(frozen=True)
class Region:
    x: int  # bounding box, pixels
    y: int
    width: int
    height: int
    area: int  # pixels in the region
    mean: float  # mean of the values array over the region's pixels


def regions(mask: np.ndarray, values: np.ndarray) -> list[Region]:
    """8-connected regions of a boolean mask, with the mean of `values` over each (cc3d labels them)."""
    labels, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8,
                                              return_N=True)
    if count == 0:
        return []
    stats = cc3d.statistics(labels)
    inside = labels != 0  # text is a small part of a photo: sum over its pixels only
    sums = np.bincount(labels[inside], weights=values[inside].astype(np.float64), minlength=count + 1)
    found = []
    for label in range(1, count + 1):
        rows, cols = stats["bounding_boxes"][label][:2]  # 2-D labels: (rows, cols) slices
        area = int(stats["voxel_counts"][label])
        found.append(Region(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start, area,
                            float(sums[label] / area)))
    return found
