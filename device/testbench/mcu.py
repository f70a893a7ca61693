"""A simulated peripheral MCU on a pty: the firmware side of PROTOCOL.md, built from our own Link class.

It answers HELLO, ACKs and applies LED/buzzer patterns (recorded in `received`), sends heartbeats and
input events (door, ignition, button), and can misbehave on request: corrupt bytes, drop, duplicate or
delay frames (`LineFaults`), go silent, or be unplugged and plugged back in at the same path.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

from device.testbench.faults import FaultyLine, LineFaults, LineTransport
from device.testbench.port import SimPort
from firmware_bridge.errors import CommandError, LinkError
from firmware_bridge.mcu.commands import BuzzerPattern, Input, InputEvent, Led, LedPattern, parse_message
from firmware_bridge.mcu.framing import DELIMITER
from firmware_bridge.mcu.link import Link, LinkConfig, LinkState

log = logging.getLogger(__name__)

RECEIVED_MEMORY = 100_000  # commands kept for inspection (a long bench run must not grow without bound)


class SimMcu:
    def __init__(self, link_path: str | None = None, *, faults: LineFaults | None = None,
                 link: LinkConfig | None = None,
                 on_command: Callable[[LedPattern | BuzzerPattern], None] | None = None) -> None:
        self._on_command = on_command
        self.link = Link(link or LinkConfig(name="sim-mcu"), self._message_received, self._state_changed)
        self.line = FaultyLine(self.link, faults or LineFaults(), DELIMITER, self._write)
        self.port = SimPort(self.line, link_path)
        self.received: deque[LedPattern | BuzzerPattern] = deque(maxlen=RECEIVED_MEMORY)
        self.leds: dict[Led, LedPattern] = {}
        self.inputs: dict[Input, bool] = {which: False for which in Input}
        self.input_counts: dict[Input, int] = {which: 0 for which in Input}
        self.bad_messages = 0

    @property
    def path(self) -> str:
        return self.port.path

    def _write(self, data: bytes) -> None:
        self.port.write(data)

    async def start(self) -> str:
        path = await self.port.plug()
        self.link.connection_made(LineTransport(self.line))
        return path

    async def stop(self) -> None:
        self.link.connection_lost(None)
        self.link.close()
        await self.port.close()

    async def __aenter__(self) -> SimMcu:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- faults --------------------------------------------------------------------------------------
    def set_silent(self, silent: bool) -> None:
        """A hung firmware: nothing sent, nothing heard. The agent's link goes down after its timeout."""
        self.line.silent = silent
        log.info("sim MCU %s", "silent" if silent else "talking again")

    async def unplug(self) -> None:
        self.link.connection_lost(None)
        await self.port.unplug()

    async def replug(self) -> str:
        """Power-cycled and back: a new pty at the same path, a fresh HELLO (the firmware rebooted)."""
        return await self.start()

    # ---- inputs and commands -------------------------------------------------------------------------
    def post_input(self, which: Input, active: bool) -> asyncio.Future[None]:
        self.inputs[which] = active
        self.input_counts[which] += 1
        return self.link.post(InputEvent.TYPE, InputEvent(which, active, self.input_counts[which]).to_payload())

    async def set_input(self, which: Input, active: bool) -> None:
        await self.post_input(which, active)

    def _report_inputs(self) -> None:
        """After a handshake the firmware reports every input's state, so the agent starts in sync."""
        for which, active in self.inputs.items():
            event = InputEvent(which, active, self.input_counts[which])
            future = self.link.post(InputEvent.TYPE, event.to_payload())
            future.add_done_callback(_log_failure)

    def _message_received(self, msg_type: int, payload: bytes) -> None:
        try:
            message = parse_message(msg_type, payload)
        except CommandError as exc:
            self.bad_messages += 1
            log.warning("sim MCU: bad message: %s", exc)
            return
        if isinstance(message, InputEvent):
            self.bad_messages += 1
            log.warning("sim MCU: got an MCU-to-agent message %r", message)
            return
        if isinstance(message, LedPattern):
            self.leds[message.led] = message
        self.received.append(message)
        log.debug("sim MCU: %r", message)
        if self._on_command is not None:
            self._on_command(message)

    def _state_changed(self, state: LinkState) -> None:
        if state is LinkState.UP:
            self._report_inputs()
        else:  # PROTOCOL.md section 7: without a host, LEDs off and the buzzer quiet
            self.leds.clear()


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and isinstance(future.exception(), LinkError):
        log.info("sim MCU: input report not delivered: %s", future.exception())
