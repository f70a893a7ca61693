"""Track thinning for storage: Douglas-Peucker per segment, segments split at time gaps.

A point survives if dropping it would move the stored line more than `tolerance_m` away from it, or if
it is the first point after a gap (tunnel, receiver off), or if `max_interval_s` passed since the last
kept point (so a long straight drive still leaves a breadcrumb now and then).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from device.positioning.geo import LocalProjection
from firmware_bridge.fix import Fix


@dataclass(frozen=True)
class ThinningConfig:
    tolerance_m: float = 10.0  # max distance of a dropped point from the kept line
    max_gap_s: float = 30.0  # a longer silence starts a new segment
    max_interval_s: float = 300.0  # keep at least one point this often


@dataclass(frozen=True)
class ThinResult:
    kept: tuple[int, ...]  # indexes into the input, in order
    total: int
    max_deviation_m: float  # largest distance of any input point from the thinned line

    @property
    def reduction(self) -> float:
        """Input points per kept point (10.0 = ten times fewer)."""
        return self.total / len(self.kept) if self.kept else 0.0


def thin(track: Sequence[Fix], config: ThinningConfig | None = None) -> ThinResult:
    cfg = config or ThinningConfig()
    coords = [(f.lat, f.lon) for f in track if f.lat is not None and f.lon is not None]
    if len(coords) != len(track):
        raise ValueError("thin() needs fixes with a position")
    if not coords:
        return ThinResult((), 0, 0.0)
    proj = LocalProjection(*coords[0])
    xy = np.array([proj.to_xy(lat, lon) for lat, lon in coords], dtype=np.float64)
    t = np.array([f.time.timestamp() if f.time else float(i) for i, f in enumerate(track)])
    kept: list[int] = []
    worst = 0.0
    for start, end in _segments(t, cfg):
        idx, dev = _douglas_peucker(xy, start, end, cfg.tolerance_m)
        kept += idx
        worst = max(worst, dev)
    return ThinResult(tuple(kept), len(coords), worst)


def _segments(t: np.ndarray, cfg: ThinningConfig) -> list[tuple[int, int]]:
    """[start, end] index pairs: split at gaps, and cut long stretches at max_interval_s."""
    out = []
    start = 0
    for i in range(1, len(t) + 1):
        gap = i == len(t) or t[i] - t[i - 1] > cfg.max_gap_s
        long = i < len(t) and t[i] - t[start] > cfg.max_interval_s
        if gap or long:
            end = i - 1 if gap else i
            out.append((start, end))
            start = i  # after a gap a new segment; after a cut the segments share point i
    return out


def _douglas_peucker(xy: np.ndarray, start: int, end: int, tol: float) -> tuple[list[int], float]:
    """Kept indexes of xy[start..end] (inclusive) and the max deviation of the dropped ones."""
    if end <= start:
        return [start], 0.0
    keep = np.zeros(end - start + 1, dtype=bool)
    keep[0] = keep[-1] = True
    worst = 0.0
    stack = [(start, end)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        dist = point_segment_distance(xy[a + 1:b], xy[a], xy[b])
        k = int(np.argmax(dist))
        if dist[k] > tol:
            mid = a + 1 + k
            keep[mid - start] = True
            stack += [(a, mid), (mid, b)]
        else:
            worst = max(worst, float(dist[k]))
    return [start + int(i) for i in np.flatnonzero(keep)], worst


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    denom = float(ab @ ab)
    if denom == 0.0:
        off = p - a
    else:
        s = np.clip(((p - a) @ ab) / denom, 0.0, 1.0)
        off = p - (a + np.outer(s, ab))
    dist: np.ndarray = np.hypot(off[:, 0], off[:, 1])
    return dist
