"""The one place a receiver's fix becomes what an event carries: `Fix` → the contract's `Position`."""
from __future__ import annotations

from device.contract.position import Position
from firmware_bridge.fix import Fix


def position(fix: Fix | None) -> Position | None:
    return Position(fix.to_dict()) if fix is not None else None
