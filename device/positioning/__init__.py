"""Where the van is, relative to its route: fix filtering, stop arrival/departure, track thinning, clock skew."""
from device.positioning.clock import ClockConfig, ClockSkewDetector
from device.positioning.fix_filter import FilterConfig, Filtered, FixFilter, Rejected
from device.positioning.thinning import ThinningConfig, ThinResult, thin
from device.positioning.tracker import (
    Arrived,
    Departed,
    NextStop,
    PositionEvent,
    PositionTracker,
    StopPoint,
    TrackerConfig,
)

__all__ = ["Arrived", "ClockConfig", "ClockSkewDetector", "Departed", "FilterConfig", "Filtered", "FixFilter",
           "NextStop", "PositionEvent", "PositionTracker", "Rejected", "StopPoint", "ThinResult",
           "ThinningConfig", "TrackerConfig", "thin"]
