"""Glue for the agent: the GPS source and positioning objects from the `[gps]` config section."""
from __future__ import annotations

from typing import Sequence

from device.config import GpsSection, GpsSourceKind
from device.positioning.clock import ClockConfig, ClockSkewDetector
from device.positioning.fix_filter import FilterConfig, FixFilter
from device.positioning.thinning import ThinningConfig
from device.positioning.tracker import PositionTracker, StopPlace, TrackerConfig
from firmware_bridge.fix import FixMode
from firmware_bridge.gps.sources import FixSource, GpsdSource, SerialNmeaSource


def fix_source(gps: GpsSection) -> FixSource:
    if gps.source is GpsSourceKind.SERIAL:
        return SerialNmeaSource(gps.serial_port, gps.baudrate)
    return GpsdSource(gps.gpsd_host, gps.gpsd_port)


def filter_config(gps: GpsSection) -> FilterConfig:
    return FilterConfig(min_mode=FixMode(gps.min_mode), max_eph_m=gps.max_eph_m,
                        max_speed_mps=gps.max_speed_kmh / 3.6)


def tracker(gps: GpsSection, stops: Sequence[StopPlace]) -> PositionTracker:
    """`stops` may be `device.contract.domain.Stop` objects: only id, lat, lon and radius_m are read."""
    config = TrackerConfig(dwell_s=gps.dwell_s, depart_margin_m=gps.depart_margin_m,
                           depart_confirm_s=gps.depart_confirm_s)
    return PositionTracker(stops, config, FixFilter(filter_config(gps)))


def thinning_config(gps: GpsSection) -> ThinningConfig:
    return ThinningConfig(tolerance_m=gps.thin_tolerance_m)


def clock_detector(gps: GpsSection) -> ClockSkewDetector:
    return ClockSkewDetector(ClockConfig(threshold_s=gps.clock_skew_threshold_s))
