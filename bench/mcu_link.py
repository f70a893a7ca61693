"""MCU link throughput: acknowledged messages/s (agent → simulated MCU over a pty) vs raw frames/s.

The baseline is the same encoded frames written through the same kind of pty and decoded by a bare
FrameDecoder with no ACKs, measured in the same run. One JSON line per line profile (clean, 1%/1% faults).
Rounds alternate the two sides and the best of each is kept: a machine shared with other work slows both alike.
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device.testbench.faults import LineFaults  # noqa: E402
from device.testbench.mcu import SimMcu  # noqa: E402
from device.testbench.port import SimPort  # noqa: E402
from firmware_bridge.mcu.bridge import McuBridge, McuConfig  # noqa: E402
from firmware_bridge.mcu.commands import Color, Led, LedPattern  # noqa: E402
from firmware_bridge.mcu.framing import Frame, FrameDecoder, FrameKind  # noqa: E402
from firmware_bridge.mcu.link import LinkConfig  # noqa: E402
from firmware_bridge.transport import PortSettings, ReconnectingPort  # noqa: E402

MESSAGES = 5000
ROUNDS = 5
LINK = LinkConfig(ack_timeout_s=0.02, max_retries=20, queue_limit=MESSAGES + 10)


def commands() -> list[LedPattern]:
    return [LedPattern(Led.STATUS, Color(i % 6), i % 65536, 100, i % 256) for i in range(MESSAGES)]


async def bench_link(workdir: Path, faults: LineFaults) -> tuple[float, dict]:
    async with SimMcu(str(workdir / "mcu"), faults=faults, link=replace(LINK, name="sim-mcu")) as sim:
        async with McuBridge(McuConfig(PortSettings(sim.path), LINK)) as bridge:
            await bridge.wait_up(10)
            await sim.link.wait_up(10)
            messages = commands()  # made before the clock, as the baseline's frames are
            started, cpu = time.perf_counter(), time.process_time()
            acked = [bridge.post(c) for c in messages]
            # ACKs are cumulative and release messages in order: when the last is acknowledged, all are. One
            # await, as the baseline awaits its last frame (gather would add a callback per message to the clock).
            await acked[-1]
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert all(f.done() and f.exception() is None for f in acked)
            assert list(sim.received) == messages
            return MESSAGES / elapsed, {**bridge.link.stats.as_dict(), "cpu_s": cpu}


class _Count:
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.decoder = FrameDecoder()
        self.done = done

    def connection_made(self, transport: object) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        if self.decoder.frames >= MESSAGES and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def bench_raw(workdir: Path) -> float:
    wire = [Frame(FrameKind.DATA, i % 256, c.TYPE, c.to_payload()).encode() for i, c in enumerate(commands())]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    counter = _Count(done)
    port = SimPort(counter, str(workdir / "raw"))  # type: ignore[arg-type]
    await port.plug()
    async with ReconnectingPort(PortSettings(port.path), lambda: counter) as reader:  # type: ignore[arg-type]
        await reader.wait_connected(10)
        started, cpu = time.perf_counter(), time.process_time()
        for frame in wire:
            port.write(frame)
            await asyncio.sleep(0)
        await asyncio.wait_for(done, 60)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await port.close()
    return MESSAGES / elapsed, cpu


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, faults in (("clean", LineFaults()),
                             ("corrupt1%_drop1%", LineFaults(corrupt_byte=0.01, drop_frame=0.01, seed=1))):
            raws, links = [], []
            for _ in range(ROUNDS if not faults.any else 1):
                raws.append(await bench_raw(workdir))
                links.append(await bench_link(workdir, faults))
            raw, raw_cpu = max(raws)
            rate, stats = max(links, key=lambda r: r[0])
            print(json.dumps({"bench": "mcu_link", "profile": name, "messages": MESSAGES,
                              "acked_msgs_per_s": round(rate), "raw_frames_per_s": round(raw),
                              "ratio": round(rate / raw, 3),
                              "cpu_us_per_msg": round(stats["cpu_s"] / MESSAGES * 1e6, 1),
                              "raw_cpu_us_per_frame": round(raw_cpu / MESSAGES * 1e6, 1),
                              "retransmits_per_msg": round(stats["retransmits"] / MESSAGES, 3),
                              "timeouts": stats["timeouts"], "nacks_received": stats["nacks_received"]}))


if __name__ == "__main__":
    asyncio.run(main())
