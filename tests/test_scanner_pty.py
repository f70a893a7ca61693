"""The scanner reader against the simulated scanner over real pty pairs (no mocks of the serial layer)."""
from __future__ import annotations

import asyncio
import os
import random
import time
import tracemalloc
from pathlib import Path

from device.testbench.codes import Barcode, mixed_codes
from device.testbench.scanner import ScannerBehaviour, SimScanner
from firmware_bridge.scanner import Scan, ScannerConfig, ScannerReader, Symbology
from firmware_bridge.transport import PortSettings

RECONNECT_BOUND_S = 2.0  # the requirement


async def _collect(reader: ScannerReader, count: int, timeout_s: float) -> list[Scan]:
    async with asyncio.timeout(timeout_s):
        return [await reader.get() for _ in range(count)]


def _check_fields(code: Barcode, scan: Scan) -> None:
    assert (scan.symbology, scan.data) == (code.symbology, code.data)
    if code.symbology is Symbology.EAN_13:
        assert scan.gtin == code.data
    elif code.symbology is Symbology.GS1_128:
        assert scan.sscc == code.data[2:] and [f.ai for f in scan.fields] == ["00"]
    else:
        assert scan.fields == () and scan.sscc is None


def test_thousand_codes_with_noise_and_double_reads(tmp_path: Path) -> None:
    codes = mixed_codes(1000, seed=3)
    assert {c.symbology for c in codes} == {Symbology.EAN_13, Symbology.GS1_128, Symbology.QR, Symbology.CODE_39}

    async def main() -> None:
        behaviour = ScannerBehaviour(double_read=0.3, noise=0.2, seed=4)
        async with SimScanner(str(tmp_path / "scanner0"), behaviour) as sim:
            config = ScannerConfig(PortSettings(sim.path), require_aim=True, double_read_window_s=5.0)
            async with ScannerReader(config) as reader:
                await reader.port.wait_connected(5)
                await sim.run_script(codes)
                sim.write_line(b"]A0END")
                scans = await _collect(reader, 1001, 60)
                await asyncio.sleep(0.2)  # anything extra would arrive now
                assert reader._queue.empty()
        assert scans[-1].data == "END"
        for code, scan in zip(codes, scans[:-1], strict=True):
            _check_fields(code, scan)
        stats = reader.stats
        assert sim.counts.noise_lines > 100 and sim.counts.double_reads > 200
        assert stats.rejected == sim.counts.noise_lines
        assert stats.double_reads == sim.counts.double_reads
        assert stats.scans == 1001

    asyncio.run(main())


def test_unplug_replug_reconnects_and_loses_no_line(tmp_path: Path) -> None:
    link = str(tmp_path / "ttyACM-scanner")

    async def main() -> None:
        sim = SimScanner(link, ScannerBehaviour(seed=1))
        await sim.start()
        async with ScannerReader(ScannerConfig(PortSettings(link, reopen_interval_s=0.1))) as reader:
            await reader.port.wait_connected(5)
            sim.write_line(b"]A0BEFORE")
            assert (await _collect(reader, 1, 5))[0].data == "BEFORE"
            sim.write_raw(b"]A0PARTIAL-LINE-CUT-BY-THE-UNPLUG")
            await sim.unplug()
            while reader.port.losses == 0:
                await asyncio.sleep(0.01)
            await sim.replug()  # a new pty behind the same path
            replugged = time.monotonic()
            after = [f"]A0AFTER-{i}".encode() for i in range(20)]
            sim.write_line(after[0])  # sent at once: possibly before the reader has reopened the port
            await reader.port.wait_connected(RECONNECT_BOUND_S)
            print(f"\nreconnected {time.monotonic() - replugged:.3f} s after the replug")
            for line in after[1:]:
                sim.write_line(line)
            scans = await _collect(reader, 20, 5)
            assert [s.data for s in scans] == [line[3:].decode() for line in after]
            assert reader.port.connects == 2 and reader.stats.rejected == 0
        await sim.stop()
        assert not os.path.exists(link)

    asyncio.run(main())


def test_ten_megabytes_without_terminator_keeps_memory_bounded(tmp_path: Path, record_property) -> None:
    rng = random.Random(5)
    chunk_size = 64 * 1024
    total = 10 * 1024 * 1024
    table = bytes(b for b in range(256) if b not in b"\r\n")

    async def main() -> int:
        async with SimScanner(str(tmp_path / "noisy")) as sim:
            async with ScannerReader(ScannerConfig(PortSettings(sim.path))) as reader:
                await reader.port.wait_connected(5)
                tracemalloc.start()
                try:
                    sent = 0
                    while sent < total:
                        sim.write_raw(rng.randbytes(chunk_size).translate(table.ljust(256, b"x")))
                        sent += chunk_size
                        writer = sim.port._writer
                        assert writer is not None
                        while writer.get_write_buffer_size():  # keep at most one chunk in the simulator
                            await asyncio.sleep(0.001)
                    sim.write_raw(b"\r\n")
                    sim.write_line(b"]A0STILL-WORKING")
                    scan = await _collect(reader, 1, 30)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert scan[0].data == "STILL-WORKING"
                assert reader.stats.oversize_lines == 1 and reader.stats.scans == 1
                assert reader.stats.discarded_bytes == total  # every byte arrived and was dropped
                return peak

    peak = asyncio.run(main())
    record_property("tracemalloc_peak_bytes", peak)
    print(f"\n10 MB without terminator: tracemalloc peak {peak} bytes")
    assert peak < 1024 * 1024  # a tenth of the stream; the line buffer itself is capped at 4 KiB


def test_idle_timeout_reopens_a_silent_port(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimScanner(str(tmp_path / "quiet")) as sim:
            settings = PortSettings(sim.path, idle_timeout_s=0.3)
            async with ScannerReader(ScannerConfig(settings)) as reader:
                await reader.port.wait_connected(5)
                async with asyncio.timeout(5):
                    while reader.port.idle_reopens < 2:
                        await asyncio.sleep(0.05)
                await reader.port.wait_connected(5)
                sim.write_line(b"]A0AFTER-IDLE")
                assert (await _collect(reader, 1, 5))[0].data == "AFTER-IDLE"
                assert reader.port.connects >= 3

    asyncio.run(main())
