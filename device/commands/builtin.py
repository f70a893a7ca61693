"""The commands this release answers: the registry the agent is assembled with."""
from __future__ import annotations

from device.commands.framework import CommandRegistry


def builtin_registry() -> CommandRegistry:
    """Every command this unit knows; any other name answers `rejected`, "unknown command"."""
    registry = CommandRegistry()
    return registry
