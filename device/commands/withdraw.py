"""`withdraw_block {"block": id}`: the cloud took the van's block back (an operator re-offered it).

The handler hands the workflow a `BlockWithdrawn` input through the agent's one door (`Agent.submit`: committed,
then the driver's notice and feedback), and answers with what the workflow did: `ok` with the packages the driver
must return, or `rejected` with the workflow's reason (another block, a phase without a block to give back).
Idempotent by command id (the framework); a command cut off by a stop runs again, and a withdrawal the van had
already committed answers `ok` then.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from device.cloud_port import CloudCommand
from device.commands.framework import CommandContext, CommandOutcome, CommandRegistry, Interrupted, Status
from device.contract.domain import EventType
from device.workflow import BlockWithdrawn, Outcome

log = logging.getLogger(__name__)

NAME = "withdraw_block"

Submit = Callable[[object], Awaitable[Outcome]]
LastWithdrawal = Callable[[], Mapping[str, Any] | None]  # the workflow's record of the last block taken back


def register_withdraw(registry: CommandRegistry, submit: Submit, last_withdrawal: LastWithdrawal) -> None:
    async def withdraw(command: CloudCommand, context: CommandContext) -> CommandOutcome:
        block = command.args.get("block")
        if set(command.args) != {"block"} or not isinstance(block, str):
            return CommandOutcome(Status.REJECTED, 'expected the arguments {"block": BLOCK_ID}')
        outcome = await submit(BlockWithdrawn(block))
        if outcome.rejection is None:
            event = next(e for e in outcome.events if e.type is EventType.BLOCK_WITHDRAWN)
            returns = list(event.data["return_packages"])
            return CommandOutcome(Status.OK, f"block {block} withdrawn in {outcome.phase_before}: "
                                             f"{len(returns)} packages to return",
                                  {"block": block, "event": event.id, "phase": outcome.phase_before,
                                   "return_packages": returns, "delivered": len(event.data["delivered"])})
        last = last_withdrawal()
        if last is not None and last.get("block") == block:  # a rerun after a stop: it is done already
            return CommandOutcome(Status.OK, f"block {block} was already withdrawn",
                                  {"block": block, "return_packages": list(last.get("return_packages", []))})
        rejection = outcome.rejection
        return CommandOutcome(Status.REJECTED, f"{rejection.reason.value}: {rejection.detail}",
                              {"block": block, "reason": rejection.reason.value, "phase": outcome.phase_before})

    registry.register(NAME, withdraw, interrupted=Interrupted.RERUN)
