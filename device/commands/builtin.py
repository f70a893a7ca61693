"""The commands this release answers: the registry the agent is assembled with."""
from __future__ import annotations

from device.commands import config_change, handlers, logs
from device.commands.framework import CommandRegistry


def builtin_registry() -> CommandRegistry:
    """Every command this unit knows; any other name answers `rejected`, "unknown command"."""
    registry = CommandRegistry()
    registry.register("selftest", handlers.selftest)
    registry.register("restart", handlers.restart)
    registry.register(config_change.NAME, config_change.set_config, resume=config_change.confirm)
    registry.register(logs.NAME, logs.upload_logs)
    return registry
