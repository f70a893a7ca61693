"""The unit's first ExecStartPre, run from the installer's release (/opt/flexedge), never from the release
being tried: it must work when the new release cannot even start. Each start of a pending release is counted;
once it has been started `max_starts` times, or its deadline passed, without passing its health gate, the
previous release is put back before the unit starts anything. A crash loop therefore ends in a rollback after
`max_starts` starts, not in endless restarts.
"""
from __future__ import annotations

import logging
import time

from device.update.layout import CURRENT, Releases

log = logging.getLogger(__name__)


def guard(releases: Releases, now: float | None = None) -> str:
    """Decide before a start; returns what was decided (one line for the journal)."""
    now = time.time() if now is None else now
    pending = releases.pending()
    if pending is None:
        return "no update pending"
    if releases.resolved(CURRENT) != (releases.root / pending.target).resolve():
        releases.roll_back(pending, "the switch did not complete (stopped between the marker and the rename)")
        return f"release {pending.version}: switch incomplete, previous release kept"
    if pending.starts >= pending.max_starts:
        releases.roll_back(pending, f"started {pending.starts} times without passing its health gate")
        return f"release {pending.version} rolled back after {pending.starts} starts"
    if now > pending.deadline:
        releases.roll_back(pending, f"not proven good within {pending.deadline - pending.switched_at:.0f} s")
        return f"release {pending.version} rolled back: deadline passed"
    counted = releases.count_start(pending)
    return f"starting pending release {pending.version} (start {counted.starts} of {counted.max_starts})"
