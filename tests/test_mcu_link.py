"""The MCU link end to end: McuBridge (agent side) against SimMcu (firmware side) over real pty pairs.

Both ends run our own protocol classes; the simulator damages the line (seeded RNG) in both directions.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from device.feedback import PATTERNS, show
from device.testbench.faults import LineFaults
from device.testbench.mcu import SimMcu
from device.testbench.port import SimPort
from device.workflow.outputs import Feedback
from firmware_bridge.errors import LinkDown, NotAcked
from firmware_bridge.indicator import OFF, Indicator
from firmware_bridge.mcu.bridge import McuBridge, McuConfig
from firmware_bridge.mcu.commands import BuzzerPattern, Color, Input, InputEvent, Led, LedPattern, MessageType
from firmware_bridge.mcu.framing import Frame, FrameDecoder, FrameKind
from firmware_bridge.mcu.link import Hello, LinkConfig, LinkState
from firmware_bridge.transport import PortSettings

# Short timers so fault tests finish quickly; the protocol is the same as with the defaults.
FAST = LinkConfig(ack_timeout_s=0.02, max_retries=20, hello_interval_s=0.1, heartbeat_interval_s=0.2,
                  link_timeout_s=2.0, queue_limit=20_000)
FAST_MCU = replace(FAST, name="sim-mcu")
INITIAL_INPUT_REPORTS = len(Input)  # the MCU reports every input's state after each handshake


def run(tmp_path: Path, body: Callable[[McuBridge, SimMcu], Awaitable[None]], *, faults: LineFaults | None = None,
        host: LinkConfig = FAST, mcu: LinkConfig = FAST_MCU) -> None:
    async def main() -> None:
        sim = SimMcu(str(tmp_path / "ttyMCU"), faults=faults, link=mcu)
        await sim.start()
        bridge = McuBridge(McuConfig(PortSettings(sim.path, reopen_interval_s=0.05), host)).start()
        try:
            await bridge.wait_up(5)
            await sim.link.wait_up(5)
            await body(bridge, sim)
        finally:
            await bridge.close()
            await sim.stop()

    asyncio.run(main())


async def drain_inputs(bridge: McuBridge, count: int, timeout_s: float) -> list[InputEvent]:
    async with asyncio.timeout(timeout_s):
        return [await bridge.inputs.get() for _ in range(count)]


def random_commands(count: int, seed: int) -> list[LedPattern | BuzzerPattern]:
    rng = random.Random(seed)
    return [LedPattern(rng.choice(list(Led)), rng.choice(list(Color)), rng.randrange(0x10000), i % 0x10000, i % 256)
            if i % 3 else BuzzerPattern(rng.randrange(0x10000), rng.randrange(0x10000), i % 0x10000, i % 256)
            for i in range(count)]


def test_ten_thousand_messages_each_way_through_a_bad_line(tmp_path: Path, record_property) -> None:
    count = 10_000
    commands = random_commands(count, seed=7)
    faults = LineFaults(corrupt_byte=0.01, drop_frame=0.01, seed=11)

    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        inputs = asyncio.create_task(drain_inputs(bridge, INITIAL_INPUT_REPORTS + count, 180))
        to_mcu = [bridge.post(c) for c in commands]
        to_host = [sim.post_input(Input(1 + i % 3), bool(i % 2)) for i in range(count)]
        async with asyncio.timeout(180):
            await asyncio.gather(*to_mcu, *to_host)
        received = (await inputs)[INITIAL_INPUT_REPORTS:]
        await asyncio.sleep(0.3)  # any late duplicate would show up now
        assert list(sim.received) == commands  # exactly once, in order, agent → MCU
        assert [(e.input, e.active, e.count) for e in received] == [
            (Input(1 + i % 3), bool(i % 2), i // 3 + 1) for i in range(count)]  # MCU → agent
        assert bridge.inputs.empty() and bridge.bad_messages == 0 and sim.bad_messages == 0
        host, mcu = bridge.link.stats, sim.link.stats
        assert host.failures == mcu.failures == 0 and host.handshakes == mcu.handshakes == 1
        assert sim.line.counts.dropped_frames > 0 and sim.line.counts.corrupted_bytes > 0
        assert host.frames_rejected > 0 and mcu.frames_rejected > 0 and host.retransmits > 0
        figures = {"messages_each_way": count, "faults": sim.line.counts.__dict__,
                   "agent": host.as_dict(), "mcu": mcu.as_dict()}
        record_property("mcu_link_figures", json.dumps(figures))
        print("\nMCU link figures:", json.dumps(figures))

    run(tmp_path, body, faults=faults)


@pytest.mark.parametrize("faults", [
    LineFaults(),
    LineFaults(duplicate_frame=0.1, seed=1),
    LineFaults(delay_s=0.02, seed=2),
    LineFaults(corrupt_byte=0.03, drop_frame=0.05, duplicate_frame=0.05, delay_s=0.005, seed=3),
], ids=["clean", "duplicates", "latency", "everything"])
def test_fault_profiles_deliver_exactly_once(tmp_path: Path, faults: LineFaults) -> None:
    commands = random_commands(300, seed=1)

    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        inputs = asyncio.create_task(drain_inputs(bridge, INITIAL_INPUT_REPORTS + 300, 60))
        async with asyncio.timeout(60):
            await asyncio.gather(*(bridge.post(c) for c in commands))
            await asyncio.gather(*(sim.post_input(Input.BUTTON, i % 2 == 0) for i in range(300)))
        received = (await inputs)[INITIAL_INPUT_REPORTS:]
        assert list(sim.received) == commands
        assert [e.count for e in received] == list(range(1, 301))
        if faults.duplicate_frame:
            assert bridge.link.stats.duplicates + sim.link.stats.duplicates > 0

    # 20 ms ACK timers on a loaded 2-core machine: a stalled event loop, not the line, can use up 20 retries;
    # more retries keep the test about exactly-once delivery, not the scheduler.
    run(tmp_path, body, faults=faults, host=replace(FAST, max_retries=60), mcu=replace(FAST_MCU, max_retries=60))


def test_inputs_feedback_and_bad_messages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        initial = await drain_inputs(bridge, INITIAL_INPUT_REPORTS, 5)
        assert {(e.input, e.active) for e in initial} == {(i, False) for i in Input}
        await sim.set_input(Input.DOOR, True)
        assert await drain_inputs(bridge, 1, 5) == [InputEvent(Input.DOOR, True, 1)]
        indicator = Indicator(bridge)
        for feedback in (Feedback.GOOD_SCAN, Feedback.WRONG_PACKAGE, Feedback.ATTENTION):
            done = show(indicator, feedback)
            assert done is not None
            await asyncio.wait_for(done, 5)
            pattern = PATTERNS[feedback]
            assert list(sim.received)[-2:] == [pattern.led, pattern.buzzer]
        assert sim.leds[Led.STATUS] == PATTERNS[Feedback.ATTENTION].led
        done = indicator.clear()
        assert done is not None
        await asyncio.wait_for(done, 5)
        assert sim.leds[Led.STATUS] == OFF.led
        # A message type the agent does not know, and a command sent the wrong way: counted, link stays up.
        await sim.link.send(0x7E, b"\x01")
        await sim.link.send(MessageType.LED_PATTERN, LedPattern(Led.STATUS, Color.RED, 1, 1, 1).to_payload())
        assert bridge.bad_messages == 2 and bridge.is_up

    run(tmp_path, body)


def test_feedback_without_mcu_is_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    indicator = Indicator(None)
    with caplog.at_level(logging.INFO, logger="firmware_bridge.indicator"):
        assert show(indicator, Feedback.GOOD_SCAN) is None and show(indicator, Feedback.WRONG_PACKAGE) is None
    assert indicator.logged_only == 2
    assert "indicator good_scan (no MCU attached" in caplog.text and "wrong_package" in caplog.text


def test_silent_mcu_takes_the_link_down_and_it_comes_back(tmp_path: Path) -> None:
    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        sim.set_silent(True)
        async with asyncio.timeout(FAST.link_timeout_s + 2):
            while bridge.is_up:
                await asyncio.sleep(0.02)
        assert bridge.link.state is LinkState.CONNECTING and bridge.link.stats.link_downs == 1
        with pytest.raises(LinkDown):
            bridge.post(LedPattern(Led.STATUS, Color.RED, 1, 1, 1))
        assert show(Indicator(bridge), Feedback.GOOD_SCAN) is None  # degrades to a log line
        sim.set_silent(False)
        await bridge.wait_up(5)
        await bridge.send(LedPattern(Led.STATUS, Color.GREEN, 1, 1, 1))
        assert bridge.link.stats.handshakes == 2

    run(tmp_path, body)


def test_retries_exhausted_fail_explicitly(tmp_path: Path) -> None:
    host = replace(FAST, max_retries=3, link_timeout_s=30.0)  # only the retransmit limit can fire

    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        sim.set_silent(True)
        with pytest.raises(NotAcked) as info:
            await asyncio.wait_for(bridge.send(LedPattern(Led.STATUS, Color.RED, 1, 1, 1)), 5)
        assert info.value.attempts == 4  # the first send and 3 resends
        assert bridge.link.stats.failures == 1 and bridge.link.state is LinkState.CONNECTING
        sim.set_silent(False)
        await bridge.wait_up(5)
        await bridge.send(LedPattern(Led.STATUS, Color.GREEN, 1, 1, 1))

    run(tmp_path, body, host=host)


def test_unplug_and_replug(tmp_path: Path) -> None:
    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        await sim.unplug()
        async with asyncio.timeout(2):
            while bridge.link.state is not LinkState.DOWN:
                await asyncio.sleep(0.01)
        await sim.replug()
        async with asyncio.timeout(2):  # reconnect and re-handshake within 2 s
            await bridge.wait_up(2)
        await bridge.send(BuzzerPattern(2700, 50, 0, 1))
        assert list(sim.received)[-1] == BuzzerPattern(2700, 50, 0, 1)
        assert bridge.port.connects == 2 and bridge.link.stats.handshakes == 2

    run(tmp_path, body)


def test_incompatible_protocol_version_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        port = SimPort(asyncio.Protocol(), str(tmp_path / "ttyOLD"))
        await port.plug()
        async with McuBridge(McuConfig(PortSettings(port.path), FAST)) as bridge:
            await bridge.port.wait_connected(5)
            for _ in range(5):
                port.write(Frame(FrameKind.HELLO, payload=Hello(2, 64, 1234, "future-fw").to_payload()).encode())
                port.write(b"\x13\x37garbage\x00\xff\x00" * 3)  # each chunk delimited
                await asyncio.sleep(0.05)
            assert bridge.link.stats.incompatible == 5 and not bridge.is_up
            assert bridge.link.stats.frames_rejected >= 5
        await port.close()

    asyncio.run(main())


class _Recorder(asyncio.Protocol):
    """The far end played by hand: every valid frame the agent sends, in order."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if frame.kind is not FrameKind.HEARTBEAT:
                self.frames.put_nowait(frame)


def test_lost_hello_ack_is_recovered_at_once(tmp_path: Path) -> None:
    """The MCU answered our HELLO but its HELLO_ACK was lost, and it already sends DATA: the agent must
    repeat its HELLO now (not after hello_interval) so the MCU re-acks before its retries run out."""
    host = replace(FAST, hello_interval_s=30.0)

    async def main() -> None:
        far = _Recorder()
        port = SimPort(far, str(tmp_path / "ttyHAND"))
        await port.plug()
        async with McuBridge(McuConfig(PortSettings(port.path), host)) as bridge:
            hello = await asyncio.wait_for(far.frames.get(), 5)
            assert hello.kind is FrameKind.HELLO
            nonce = Hello.from_payload(hello.payload).nonce
            data = Frame(FrameKind.DATA, 0, InputEvent.TYPE, InputEvent(Input.BUTTON, True, 1).to_payload())
            await asyncio.sleep(FAST.ack_timeout_s * 2)  # the MCU's retransmission of its DATA
            port.write(data.encode())  # our HELLO_ACK "was lost"; the DATA is dropped by the agent
            again = await asyncio.wait_for(far.frames.get(), 2)  # long before the 30 s hello interval
            assert again.kind is FrameKind.HELLO and Hello.from_payload(again.payload).nonce == nonce
            port.write(Frame(FrameKind.HELLO_ACK, payload=Hello(1, 64, nonce, "hand").to_payload()).encode())
            await bridge.wait_up(2)
            port.write(data.encode())  # the retransmission
            assert await asyncio.wait_for(bridge.inputs.get(), 2) == InputEvent(Input.BUTTON, True, 1)
            ack = await asyncio.wait_for(far.frames.get(), 2)
            assert (ack.kind, ack.seq) == (FrameKind.ACK, 0)
        await port.close()

    asyncio.run(main())


def test_every_workflow_feedback_has_a_pattern() -> None:
    assert set(PATTERNS) == set(Feedback)


def test_line_noise_between_messages_is_rejected_and_counted(tmp_path: Path) -> None:
    rng = random.Random(21)

    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        await drain_inputs(bridge, INITIAL_INPUT_REPORTS, 5)
        commands = random_commands(50, seed=3)
        for i, command in enumerate(commands):
            noise = rng.randbytes(rng.randrange(1, 400))
            sim.port.write(noise)  # straight onto the pty, past the fault injector
            bridge.port._transport.write(noise)  # type: ignore[union-attr]  # and towards the MCU
            await bridge.send(command)
            await sim.set_input(Input.BUTTON, i % 2 == 0)
        received = await drain_inputs(bridge, 50, 10)
        assert list(sim.received) == commands and [e.count for e in received] == list(range(1, 51))
        assert bridge.link.stats.frames_rejected > 0 and sim.link.stats.frames_rejected > 0
        assert bridge.link.stats.link_downs == 0 and bridge.link.stats.handshakes == 1

    run(tmp_path, body)


def test_a_cancelled_send_is_withdrawn_and_the_rest_delivered(tmp_path: Path) -> None:
    host = replace(FAST, window=1)

    async def body(bridge: McuBridge, sim: SimMcu) -> None:
        commands = random_commands(6, seed=5)
        sends = [asyncio.create_task(bridge.send(c)) for c in commands]
        await asyncio.sleep(0)  # all six posted: one in flight, five queued
        sends[3].cancel()
        await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
        assert sends[3].cancelled()
        assert list(sim.received) == commands[:3] + commands[4:]

    run(tmp_path, body, host=host)
