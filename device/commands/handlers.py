"""`selftest` and `restart`."""
from __future__ import annotations

import asyncio

from device.cloud_port import CloudCommand
from device.commands.framework import CommandContext, CommandOutcome, Status
from device.config import Config, load_config
from device.hardware import mcu_config, scanner_config
from device.selftest import CheckStatus, run_checks


def held_parts(config: Config) -> frozenset[str]:
    """The hardware the running agent has open: the self-test must not open it a second time."""
    held = {"scanner"} if scanner_config(config) else set()
    held |= {"mcu"} if mcu_config(config) else set()
    held |= {"camera"} if config.camera.backend.value != "none" else set()
    return frozenset(held)


async def selftest(command: CloudCommand, context: CommandContext) -> CommandOutcome:
    """The technician's self-test (device/selftest.py) inside the agent: `ok` when nothing FAILs, else `failed`;
    every check in the data. Each check has `[commands] selftest_check_s`, the whole `selftest_deadline_s`: a
    hanging check answers failed, timed out."""
    config = load_config(context.config_path, check_files=False)
    results = await asyncio.to_thread(run_checks, context.config_path, config, context.data_dir, None,
                                      held=held_parts(config), check_timeout_s=config.commands.selftest_check_s,
                                      deadline_s=config.commands.selftest_deadline_s)
    failed = [r.name for r in results if r.status is CheckStatus.FAIL]
    counts = {s.value: sum(1 for r in results if r.status is s) for s in CheckStatus}
    detail = (f"{len(failed)} checks FAIL: {', '.join(failed)}" if failed else
              f"all checks passed ({counts['pass']} pass, {counts['warn']} warn, {counts['skip']} skip)")
    return CommandOutcome(Status.FAILED if failed else Status.OK, detail,
                          {"ok": not failed, "counts": counts, "checks": [r.to_dict() for r in results]})


async def restart(command: CloudCommand, context: CommandContext) -> CommandOutcome:
    """A clean restart: the result is committed first, then the agent stops as on SIGTERM and the unit starts it."""
    return CommandOutcome(Status.OK, "restarting", restart=True)
