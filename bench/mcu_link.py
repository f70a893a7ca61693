"""MCU link throughput: acknowledged messages/s (agent → simulated MCU over a pty) vs raw frames/s.

The baseline is the same messages as raw frames, with no link (no sequence, ACK, retransmit or future): each
is encoded as the link encodes it, written through the same kind of pty, one write per frame, decoded by a
bare FrameDecoder and parsed into its typed command as the simulated MCU does. So both sides do the same
work to get a command from the host's object to the receiver's, and the ratio is the link's own cost.
Both sides stay open for the whole run and go in lockstep: per round, a chunk of CHUNK messages on each side,
in an order that alternates; each side's rate is its messages over the time its own chunks took, over ROUNDS
rounds. A machine shared with other work slows both sides alike. The command objects are made before the
clock. One JSON line per line profile (clean, 1%/1% faults).
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.testbench.faults import LineFaults  # noqa: E402
from device.testbench.mcu import SimMcu  # noqa: E402
from device.testbench.port import SimPort  # noqa: E402
from firmware_bridge.mcu.bridge import McuBridge, McuConfig  # noqa: E402
from firmware_bridge.mcu.commands import Color, Led, LedPattern, Message, parse_message  # noqa: E402
from firmware_bridge.mcu.framing import Frame, FrameDecoder  # noqa: E402
from firmware_bridge.mcu.link import LinkConfig  # noqa: E402
from firmware_bridge.transport import PortSettings, ReconnectingPort  # noqa: E402

CHUNK, ROUNDS = 1000, 10  # 10,000 messages a side
LINK = LinkConfig(ack_timeout_s=0.02, max_retries=20, queue_limit=CHUNK + 10)


def commands() -> list[LedPattern]:
    return [LedPattern(Led.STATUS, Color(i % 6), i % 65536, 100, i % 256) for i in range(CHUNK)]


@dataclass
class Clock:
    """One side's total: messages, wall time and process CPU time of its own chunks."""

    messages: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, messages: int, wall_s: float, cpu_s: float) -> None:
        self.messages += messages
        self.wall_s += wall_s
        self.cpu_s += cpu_s

    @property
    def rate(self) -> float:
        return self.messages / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.messages * 1e6


class LinkSide:
    def __init__(self, sim: SimMcu, bridge: McuBridge) -> None:
        self.sim, self.bridge = sim, bridge
        self.messages = commands()
        self.clock = Clock()

    async def chunk(self) -> None:
        self.sim.received.clear()
        started, cpu = time.perf_counter(), time.process_time()
        acked = [self.bridge.post(c) for c in self.messages]
        # ACKs are cumulative and release messages in order: when the last is acknowledged, all are. One
        # await, as the baseline awaits its last frame (gather would add a callback per message to the clock).
        await acked[-1]
        self.clock.add(len(acked), time.perf_counter() - started, time.process_time() - cpu)
        assert all(f.done() and f.exception() is None for f in acked)
        assert list(self.sim.received) == self.messages


class _Count(asyncio.Protocol):
    """The raw receiver: frames decoded and parsed into commands, as the simulated MCU receives them."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.received: list[Message] = []
        self.target = 0
        self.done: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.received.append(parse_message(frame.msg_type, frame.payload))
        if self.decoder.frames >= self.target and self.done is not None and not self.done.done():
            self.done.set_result(None)


class RawSide:
    def __init__(self, port: SimPort, counter: _Count) -> None:
        self.port, self.counter = port, counter
        self.messages = commands()
        self.clock = Clock()

    async def chunk(self) -> None:
        self.counter.received.clear()
        self.counter.target += len(self.messages)
        self.counter.done = asyncio.get_running_loop().create_future()
        started, cpu = time.perf_counter(), time.process_time()
        for seq, message in enumerate(self.messages):
            self.port.write(Frame.encode_data(seq % 256, message.TYPE, message.to_payload()))
            await asyncio.sleep(0)
        await asyncio.wait_for(self.counter.done, 60)
        self.clock.add(len(self.messages), time.perf_counter() - started, time.process_time() - cpu)
        assert self.counter.received == self.messages


async def run_profile(workdir: Path, faults: LineFaults, rounds: int) -> tuple[LinkSide, RawSide]:
    counter = _Count()
    raw_port = SimPort(counter, str(workdir / "raw"))
    await raw_port.plug()
    try:
        async with (SimMcu(str(workdir / "mcu"), faults=faults, link=replace(LINK, name="sim-mcu")) as sim,
                    McuBridge(McuConfig(PortSettings(sim.path), LINK)) as bridge,
                    ReconnectingPort(PortSettings(raw_port.path), lambda: counter) as reader):
            await asyncio.gather(bridge.wait_up(10), sim.link.wait_up(10), reader.wait_connected(10))
            link, raw = LinkSide(sim, bridge), RawSide(raw_port, counter)
            for i in range(rounds):
                for side in ((raw, link) if i % 2 == 0 else (link, raw)):
                    await side.chunk()
            return link, raw
    finally:
        await raw_port.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, faults in (("clean", LineFaults()),
                             ("corrupt1%_drop1%", LineFaults(corrupt_byte=0.01, drop_frame=0.01, seed=1))):
            link, raw = await run_profile(workdir, faults, ROUNDS if not faults.any else 4)
            stats = link.bridge.link.stats
            print(json.dumps({"bench": "mcu_link", "profile": name, "messages": link.clock.messages,
                              "acked_msgs_per_s": round(link.clock.rate), "raw_frames_per_s": round(raw.clock.rate),
                              "ratio": round(link.clock.rate / raw.clock.rate, 3),
                              "cpu_us_per_msg": round(link.clock.cpu_us, 1),
                              "raw_cpu_us_per_frame": round(raw.clock.cpu_us, 1),
                              "retransmits_per_msg": round(stats.retransmits / stats.data_sent, 3),
                              "timeouts": stats.timeouts, "nacks_received": stats.nacks_received}))


if __name__ == "__main__":
    asyncio.run(main())
