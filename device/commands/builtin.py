"""The commands this release answers: the registry the agent is assembled with."""
from __future__ import annotations

from device.commands import config_change, handlers, logs
from device.commands.framework import CommandRegistry, Interrupted


def builtin_registry() -> CommandRegistry:
    """Every command this unit knows; any other name answers `rejected`, "unknown command". `interrupted`: what a
    command cut off by a stop answers at the next start."""
    registry = CommandRegistry()
    registry.register("selftest", handlers.selftest, interrupted=Interrupted.RERUN)
    registry.register("restart", handlers.restart, interrupted=Interrupted.DONE)
    # Cut off before its pending marker: the file is unchanged, the answer `failed`; after it: its Resume answers.
    registry.register(config_change.NAME, config_change.set_config, resume=config_change.confirm,
                      interrupted=Interrupted.FAIL)
    registry.register(logs.NAME, logs.upload_logs, interrupted=Interrupted.RERUN)  # the blob id is the command's
    return registry
