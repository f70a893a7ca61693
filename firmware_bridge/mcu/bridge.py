"""The MCU as the agent sees it: set LEDs, beep, receive input events; reconnects on its own.

`McuBridge` owns the serial port (ReconnectingPort) and one long-lived `Link`; the link re-handshakes on
every new connection. Messages that fail to parse are logged and counted, never raised into the loop.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from firmware_bridge.errors import CommandError
from firmware_bridge.mcu.commands import BuzzerPattern, InputEvent, LedPattern, Message, parse_message
from firmware_bridge.mcu.link import Link, LinkConfig, LinkState
from firmware_bridge.transport import PortSettings, ReconnectingPort

log = logging.getLogger(__name__)

INPUT_QUEUE_SIZE = 256  # input events waiting for the agent; beyond this the oldest are dropped and counted


@dataclass(frozen=True)
class McuConfig:
    port: PortSettings
    link: LinkConfig = field(default_factory=LinkConfig)


class McuBridge:
    def __init__(self, config: McuConfig) -> None:
        self.config = config
        self.link = Link(config.link, self._message_received, self._state_changed)
        self.port = ReconnectingPort(config.port, lambda: self.link)
        self.inputs: asyncio.Queue[InputEvent] = asyncio.Queue(INPUT_QUEUE_SIZE)
        self.bad_messages = 0
        self.dropped_inputs = 0

    @property
    def is_up(self) -> bool:
        return self.link.is_up

    def start(self) -> McuBridge:
        self.port.start()
        return self

    async def close(self) -> None:
        await self.port.close()
        self.link.close()

    async def __aenter__(self) -> McuBridge:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_up(self, timeout_s: float) -> None:
        await self.link.wait_up(timeout_s)

    def post(self, message: LedPattern | BuzzerPattern) -> asyncio.Future[None]:
        """Queue a command without waiting; raises LinkDown at once when there is no MCU."""
        return self.link.post(message.TYPE, message.to_payload())

    async def send(self, message: LedPattern | BuzzerPattern) -> None:
        """Send a command and wait for the MCU's ACK (LinkDown, NotAcked on failure)."""
        await self.post(message)

    def _message_received(self, msg_type: int, payload: bytes) -> None:
        try:
            message: Message = parse_message(msg_type, payload)
        except CommandError as exc:
            self.bad_messages += 1
            log.warning("MCU sent a bad message: %s", exc)
            return
        if not isinstance(message, InputEvent):
            self.bad_messages += 1
            log.warning("MCU sent an agent-to-MCU message: %r", message)
            return
        if self.inputs.full():
            self.inputs.get_nowait()
            self.dropped_inputs += 1
            log.error("MCU input queue full: oldest input event dropped")
        self.inputs.put_nowait(message)

    def _state_changed(self, state: LinkState) -> None:
        log.info("MCU link %s", state.value)
