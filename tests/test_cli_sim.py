"""`flexedge sim scanner|mcu` as a technician runs them: a real subprocess on a pty, the agent's reader on it."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from device.testbench.codes import mixed_codes
from firmware_bridge.mcu.bridge import McuBridge, McuConfig
from firmware_bridge.mcu.commands import Color, Led, LedPattern
from firmware_bridge.scanner import ScannerConfig, ScannerReader
from firmware_bridge.transport import PortSettings


def start_sim(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "device.cli", "sim", *args, "--json", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


async def read_doc(stream: IO[str]) -> dict:
    line = await asyncio.wait_for(asyncio.to_thread(stream.readline), 20)
    assert line, "simulator exited early"
    return json.loads(line)


def stop_sim(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out


def test_sim_scanner_cli(tmp_path: Path) -> None:
    link = str(tmp_path / "ttyACM-scan")
    proc = start_sim("scanner", "--link", link, "--count", "12", "--interval", "0.01", "--start-delay", "0",
                     "--seed", "9", "--double-read", "0.5", "--noise", "0.5")

    async def main() -> None:
        assert await read_doc(proc.stdout) == {"simulator": "scanner", "port": link}
        async with ScannerReader(ScannerConfig(PortSettings(link), require_aim=True)) as reader:
            async with asyncio.timeout(20):
                scans = [await reader.get() for _ in range(12)]
        assert [(s.symbology, s.data) for s in scans] == [(c.symbology, c.data) for c in mixed_codes(12, seed=9)]

    try:
        asyncio.run(main())
    finally:
        stop_sim(proc)
    assert not os.path.exists(link)


def test_sim_mcu_cli(tmp_path: Path) -> None:
    link = str(tmp_path / "ttyMCU")
    proc = start_sim("mcu", "--link", link, "--input-every", "0.2", "--seed", "3", "--corrupt", "0.01")

    async def main() -> None:
        assert await read_doc(proc.stdout) == {"simulator": "mcu", "port": link}
        async with McuBridge(McuConfig(PortSettings(link))) as bridge:
            await bridge.wait_up(10)
            await asyncio.wait_for(bridge.send(LedPattern(Led.STATUS, Color.GREEN, 150, 100, 1)), 10)
            event = await asyncio.wait_for(bridge.inputs.get(), 10)  # the state report after the handshake
            assert event.count == 0
        doc = await read_doc(proc.stdout)
        while "command" not in doc:  # input toggles are printed too
            doc = await read_doc(proc.stdout)
        assert doc == {"command": "LedPattern", "led": "status", "color": "green", "on_ms": 150, "off_ms": 100,
                       "repeat": 1}

    try:
        asyncio.run(main())
    finally:
        out = stop_sim(proc)
    assert '"stats"' in out.splitlines()[-1]


def test_sim_scanner_codes_file(tmp_path: Path) -> None:
    codes = tmp_path / "codes.txt"
    codes.write_text("# a technician's script\nean13 5901234123457\ngs1-128 0109501101530003<GS>10LOT7\n"
                     "code39 PKG-1\n")
    link = str(tmp_path / "ttyACM-file")
    proc = start_sim("scanner", "--link", link, "--codes", str(codes), "--interval", "0", "--start-delay", "0",
                     "--terminator", "lf")

    async def main() -> None:
        await read_doc(proc.stdout)
        async with ScannerReader(ScannerConfig(PortSettings(link))) as reader:
            async with asyncio.timeout(20):
                scans = [await reader.get() for _ in range(3)]
        assert [s.symbology.value for s in scans] == ["ean13", "gs1-128", "code39"]
        assert scans[1].gtin == "09501101530003" and scans[1].field_value("10") == "LOT7"

    try:
        asyncio.run(main())
    finally:
        stop_sim(proc)


def test_sim_group_runs_the_gps_simulator(tmp_path: Path) -> None:
    route = tmp_path / "route.json"
    route.write_text(json.dumps({"stops": [{"id": "S1", "lat": 52.371, "lon": 4.891},
                                           {"id": "S2", "lat": 52.374, "lon": 4.895}]}))
    log = tmp_path / "drive.log"
    result = subprocess.run([sys.executable, "-m", "device.cli", "sim", "gps", "--route", str(route), "--out",
                             str(log), "--parked-s", "10"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["log"] == str(log) and doc["epochs"] > 10 and log.read_text().count("$GNRMC") == doc["epochs"]
