"""Merge the NMEA sentences of one receiver epoch (RMC, GGA, GSA, VTG, GST, GLL, GNS, ZDA) into one `Fix`.

No I/O: feed parsed pynmeagps messages in order; a `Fix` comes out when the next epoch starts (a sentence
with a different UTC time) or on `flush()`. Any talker (GP, GN, GL, GA, GB, BD, ...) is accepted: the talker
says which constellation computed the solution, not what the fields mean.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timezone
from typing import Any

from firmware_bridge.fix import Fix, FixMode

log = logging.getLogger(__name__)

KNOTS_TO_MPS = 1852.0 / 3600.0
KMH_TO_MPS = 1000.0 / 3600.0
# gpsd's default user-equivalent range error: eph = HDOP * this, when the receiver gives no GST.
H_UERE_M = 4.75
# From a circular 1-sigma error to the 95% radius gpsd reports as eph (Rayleigh: sqrt(-2 ln 0.05)).
SIGMA_TO_95 = 2.4477

# Sentences that carry the epoch's UTC time and so mark where an epoch starts.
TIMED = frozenset({"RMC", "GGA", "GLL", "GNS", "GST", "ZDA"})
USED = TIMED | {"GSA", "VTG"}


@dataclass(frozen=True)
class _Epoch:
    """Fields collected for one epoch so far; None means no sentence has said."""

    tod: time | None = None
    day: date | None = None
    lat: float | None = None
    lon: float | None = None
    alt: float | None = None
    speed: float | None = None
    track: float | None = None
    gsa_mode: int | None = None
    quality_fix: bool | None = None  # GGA quality > 0 / RMC, GLL, GNS status valid
    gga_mode: int | None = None  # 3 with altitude, 2 without, from GGA or GNS
    hdop: float | None = None
    sigma_h: float | None = None  # from GST
    timed: bool = False  # a sentence gpsd takes time from said so (not RMC V: its time and date are junk)


def _f(msg: Any, name: str) -> Any:
    """A field of a parsed sentence; a short sentence lacks its trailing fields entirely."""
    return getattr(msg, name, "")


def _num(value: Any) -> float | None:
    """pynmeagps gives "" for an empty field."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dop(value: Any) -> float | None:
    """Receivers send 99.99 (or 99.0) for "no DOP"."""
    dop = _num(value)
    return dop if dop is not None and 0 < dop < 99.0 else None


def _first(*values: Any) -> Any:
    """The first value that is not None."""
    return next((v for v in values if v is not None), None)


def _position(msg: Any) -> tuple[float | None, float | None]:
    lat, lon = _num(_f(msg, "lat")), _num(_f(msg, "lon"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, None
    return lat, lon


class EpochAssembler:
    """Stateful: remembers the last date seen (GGA has none) across epochs."""

    def __init__(self) -> None:
        self._epoch = _Epoch()
        self._last_day: date | None = None
        self._last_mode = FixMode.NO_FIX
        self._handlers = {"RMC": self._on_rmc, "GGA": self._on_gga, "GNS": self._on_gns, "GLL": self._on_gll,
                          "GSA": self._on_gsa, "VTG": self._on_vtg, "GST": self._on_gst, "ZDA": self._on_zda}

    def add(self, msg: Any) -> Fix | None:
        """Merge one parsed sentence; returns the previous epoch's fix when this sentence starts a new one."""
        msg_id = msg.msgID
        done = None
        tod = _f(msg, "time") if msg_id in TIMED else None
        if isinstance(tod, time):
            if self._epoch.tod is not None and tod != self._epoch.tod:
                done = self.flush()
            if self._epoch.tod is None:
                self._epoch = replace(self._epoch, tod=tod)
        handler = self._handlers.get(msg_id)
        if handler is not None:
            self._epoch = handler(msg, self._epoch)
        return done

    def flush(self) -> Fix | None:
        """End the current epoch; returns its fix (None if it had no time)."""
        epoch, self._epoch = self._epoch, _Epoch()
        if epoch.day is not None:
            self._last_day = epoch.day
        if epoch.tod is None:
            return None
        mode = self._mode_of(epoch)
        self._last_mode = mode
        return _to_fix(epoch, epoch.day or self._last_day, mode)

    def _mode_of(self, e: _Epoch) -> FixMode:
        """Like gpsd: GGA implies the mode (satellites used, altitude), GSA states it where GGA cannot,
        and an epoch with only RMC/GLL keeps the last mode."""
        if e.lat is None or e.lon is None or e.quality_fix is False:
            return FixMode.NO_FIX
        stated = e.gga_mode if e.gga_mode in (2, 3) else (e.gsa_mode or e.gga_mode)
        if stated is not None:
            return FixMode(stated)
        return max(self._last_mode, FixMode.FIX_2D)

    # --- one method per sentence type: take the epoch so far, return it updated -----------------------

    @staticmethod
    def _on_rmc(msg: Any, e: _Epoch) -> _Epoch:
        valid = _f(msg, "status") == "A"
        e = replace(e, quality_fix=valid if e.quality_fix is None else e.quality_fix and valid)
        if not valid:
            return e
        lat, lon = _position(msg)
        day, speed, track = _f(msg, "date"), _num(_f(msg, "spd")), _num(_f(msg, "cog"))
        return replace(e, day=day if isinstance(day, date) else e.day, timed=True,
                       lat=_first(lat, e.lat), lon=_first(lon, e.lon),
                       speed=speed * KNOTS_TO_MPS if speed is not None else e.speed, track=_first(track, e.track))

    @staticmethod
    def _on_gga(msg: Any, e: _Epoch) -> _Epoch:
        quality, used = _int(_f(msg, "quality")), _int(_f(msg, "numSV"))
        e = replace(e, quality_fix=quality > 0, hdop=_first(_dop(_f(msg, "HDOP")), e.hdop),
                    timed=e.timed or isinstance(_f(msg, "time"), time))
        lat, lon = _position(msg)
        if quality <= 0 or lat is None:
            return e
        alt = _num(_f(msg, "alt"))
        # As gpsd does: fewer than 3 satellites used is no fix (a later GSA may still state one), an
        # altitude makes it 3D. Per-constellation GGAs in one epoch (GPGGA, GAGGA): the best one counts.
        mode = 1 if used < 3 else (3 if alt is not None else 2)
        return replace(e, lat=lat, lon=lon, alt=_first(alt, e.alt), gga_mode=max(mode, e.gga_mode or 0))

    @staticmethod
    def _on_gns(msg: Any, e: _Epoch) -> _Epoch:
        pos_mode = _f(msg, "posMode")
        if not isinstance(pos_mode, str) or pos_mode[:1] in ("", "N"):
            return replace(e, quality_fix=False if e.quality_fix is None else e.quality_fix)
        lat, lon = _position(msg)
        alt = _first(_num(_f(msg, "alt")), e.alt)
        return replace(e, quality_fix=True, timed=True, lat=_first(lat, e.lat), lon=_first(lon, e.lon), alt=alt,
                       hdop=_first(_dop(_f(msg, "HDOP")), e.hdop),
                       gga_mode=e.gga_mode or (3 if alt is not None else 2))

    @staticmethod
    def _on_gll(msg: Any, e: _Epoch) -> _Epoch:
        if _f(msg, "status") != "A":
            return e
        lat, lon = _position(msg)
        return replace(e, lat=_first(lat, e.lat), lon=_first(lon, e.lon), timed=True,
                       quality_fix=True if e.quality_fix is None else e.quality_fix)

    @staticmethod
    def _on_gsa(msg: Any, e: _Epoch) -> _Epoch:
        nav_mode = _int(_f(msg, "navMode"))
        mode = nav_mode if 1 <= nav_mode <= 3 else None
        # Several GSAs (one per constellation) share an epoch; the best mode stands.
        best = max(filter(None, (mode, e.gsa_mode)), default=None)
        return replace(e, gsa_mode=best, hdop=_first(e.hdop, _dop(_f(msg, "HDOP"))))

    @staticmethod
    def _on_vtg(msg: Any, e: _Epoch) -> _Epoch:
        knots, kmh = _num(_f(msg, "sogn")), _num(_f(msg, "sogk"))
        speed = knots * KNOTS_TO_MPS if knots is not None else (kmh * KMH_TO_MPS if kmh is not None else None)
        # RMC (same epoch) wins where both give a value.
        return replace(e, speed=_first(e.speed, speed), track=_first(e.track, _num(_f(msg, "cogt"))))

    @staticmethod
    def _on_gst(msg: Any, e: _Epoch) -> _Epoch:
        s_lat, s_lon = _num(_f(msg, "stdLat")), _num(_f(msg, "stdLong"))
        if s_lat is None or s_lon is None:
            return e
        return replace(e, sigma_h=math.sqrt((s_lat * s_lat + s_lon * s_lon) / 2))

    @staticmethod
    def _on_zda(msg: Any, e: _Epoch) -> _Epoch:
        try:
            day = date(int(_f(msg, "year")), int(_f(msg, "month")), int(_f(msg, "day")))
        except (TypeError, ValueError):
            return e
        return replace(e, day=e.day or day, timed=True)


def _to_fix(e: _Epoch, day: date | None, mode: FixMode) -> Fix:
    # Like gpsd: the date comes only from a valid RMC or a ZDA (a void RMC's date is junk: MTK says 1980,
    # a Garmin in simulator mode says whatever), and GGA's time of day needs a date from before.
    moment = datetime.combine(day, e.tod, timezone.utc) if day and e.timed and e.tod is not None else None
    if mode < FixMode.FIX_2D:
        return Fix(time=moment, lat=None, lon=None, mode=FixMode.NO_FIX)
    if e.sigma_h is not None:
        eph = e.sigma_h * SIGMA_TO_95
    elif e.hdop is not None:
        eph = e.hdop * H_UERE_M
    else:
        eph = None
    return Fix(time=moment, lat=e.lat, lon=e.lon, mode=mode,
               alt=e.alt if mode is FixMode.FIX_3D else None,
               speed=e.speed, track=e.track, eph=eph)
