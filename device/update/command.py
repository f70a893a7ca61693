"""The `update` command in the command framework (device/commands): the handler fetches, verifies, installs and
switches, then defers (the framework writes its pending marker and restarts the agent); the resume, run by the
agent that starts next, answers with the health gate's outcome: ok from the new release, failed after a
rollback (from the new release that failed its gate, or from the previous one put back by the unit's guard).
"""
from __future__ import annotations

import logging

from device.cloud_port import CloudCommand
from device.commands import CommandContext, CommandOutcome, CommandRegistry, Deferred, PendingMarker, Status
from device.update.errors import UpdateError
from device.update.fetch import FetchPolicy, TlsFiles
from device.update.gate import running_release
from device.update.handler import UpdateContext, handle_update
from device.update.layout import APPLIED, START_ALLOWANCE_S
from device.update.service import UpdateService
from device.update.space import MIB
from device.update.verify import Running, SignatureCheck

log = logging.getLogger(__name__)


def register_update(registry: CommandRegistry, service: UpdateService, running: Running,
                    check_signature: SignatureCheck, tls: TlsFiles | None) -> None:
    settings = service.settings
    update_ctx = UpdateContext(service.releases, running, check_signature, tls, settings.gate_s, settings.max_starts,
                               FetchPolicy(attempts=settings.fetch_attempts), settings.free_margin_mb * MIB,
                               running_release(service.prefix))

    async def handle(command: CloudCommand, context: CommandContext) -> CommandOutcome | Deferred:
        try:
            switched = await handle_update(command.id, command.args, update_ctx)
        except UpdateError as exc:
            log.error("update %s not applied: %s", command.id, exc)
            return CommandOutcome(Status(exc.status), str(exc))
        return Deferred(switched.detail, dict(switched.data),
                        settings.max_starts * (settings.gate_s + START_ALLOWANCE_S))

    async def resume(marker: PendingMarker, context: CommandContext) -> CommandOutcome:
        outcome = await service.settle()
        if outcome is None or outcome.command_id != marker.id:
            return CommandOutcome(Status.FAILED, "the switch to the new release did not happen", dict(marker.state))
        data = {"version": outcome.version, "previous_version": outcome.previous_version, "result": outcome.result,
                "reason": outcome.reason}
        if outcome.result == APPLIED:
            return CommandOutcome(Status.OK, f"running {outcome.version}", data)
        return CommandOutcome(Status.FAILED, f"rolled back to {outcome.previous_version}: {outcome.reason}", data,
                              restart=service.rolled_back_here(outcome))

    registry.register("update", handle, resume=resume)
