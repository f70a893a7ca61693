"""The chaos rig for the whole agent: the real `flexedge run` (not only its sync) on simulated hardware — a
serial scanner and the MCU on ptys (at stable symlinked paths, as udev gives), a real gpsd fed by gpsfake — with
the TLS mosquitto and the reference cloud of `Rig`.

The load is the scanner: unique codes at a steady rate. A van without a block records each scan as an
`input.rejected` event, commits it, then tells the driver (a low beep on the MCU), so every scan takes the
agent's whole path: serial bytes -> parser -> workflow -> store -> feedback -> sync -> cloud.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cloud_sync.cloud import CloudDb
from device.feedback import PATTERNS
from device.testbench.codes import Barcode
from device.testbench.gps_route import DriveConfig, SimStop, drive, write_log
from device.testbench.gpsfake import GpsFake
from device.testbench.mcu import SimMcu
from device.testbench.procs import free_tcp_port
from device.testbench.scanner import SimScanner
from device.workflow.outputs import Feedback
from firmware_bridge.scanner.parse import Symbology
from tests.helpers.chaos.rig import DEVICE, REPO, Rig, Tally

T = TypeVar("T")
SCAN_RATE = 20.0  # codes per second from the scanner: a busy loading dock, sustained
REJECTED_BEEP = PATTERNS[Feedback.REJECTED].buzzer  # what the driver hears once a scan is committed
STOP_TIMEOUT_S = 15.0


class SimLoop:
    """An event loop in a thread, for the asyncio simulators, driven from the scenario's plain code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class ScanLoad:
    """Scans sent by the simulated scanner while it was plugged in (a scan while unplugged goes nowhere)."""

    sent: int = 0
    while_unplugged: int = 0


class AgentRig(Rig):
    """`Rig` with the agent process in place of the producer + `flexedge sync` pair."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sims = SimLoop()
        self.scanner = SimScanner(str(self.work / "scanner"))
        self.mcu = SimMcu(str(self.work / "mcu"))
        self.gps_port = free_tcp_port()
        self.gps_log = self.work / "drive.nmea"
        self.gps: GpsFake | None = None
        self.agent: subprocess.Popen | None = None
        self.agent_starts = 0
        self.load = ScanLoad()
        self._scanning: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> AgentRig:
        super().start()
        self.sims.run(self.scanner.start())
        self.sims.run(self.mcu.start())
        stops = [SimStop(f"S{i}", 52.37 + 0.004 * i, 4.89 + 0.003 * (i % 2)) for i in range(6)]
        config = DriveConfig(parked_s=20)
        write_log(self.gps_log, drive(stops, config), config)
        self.start_gpsd()
        return self

    def close(self) -> None:
        self.stop_scanning()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.kill()
            self.agent.wait(10)
        if self.gps is not None:
            self.gps.stop()
        for sim in (self.scanner, self.mcu):
            try:
                self.sims.run(sim.stop())
            except Exception:  # noqa: BLE001 (already unplugged)
                pass
        self.sims.close()
        super().close()

    def config_file(self) -> Path:
        path = super().config_file()
        path.write_text(path.read_text() + f"""
[scanner]
port = "{self.scanner.path}"
[mcu]
port = "{self.mcu.path}"
[gps]
source = "gpsd"
gpsd_port = {self.gps_port}
""")
        return path

    # --- the agent process -------------------------------------------------------------------------

    def start_agent(self) -> None:
        self.agent = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(self.config_file())],
                                      cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._log_file("agent.log"))
        self.agent_starts += 1

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(10)

    def stop_agent(self) -> int:
        """SIGTERM, as systemd stops the unit; the agent gives its outbox a moment, then exits."""
        assert self.agent is not None
        self.agent.terminate()
        return self.agent.wait(STOP_TIMEOUT_S)

    @property
    def agent_alive(self) -> bool:
        return self.agent is not None and self.agent.poll() is None

    # --- hardware ----------------------------------------------------------------------------------

    def start_gpsd(self) -> None:
        self.gps = GpsFake(self.gps_log, port=self.gps_port, cycle_s=0.02, loop=True).start()

    def kill_gpsd(self) -> None:
        assert self.gps is not None
        self.gps.stop()

    def start_scanning(self, rate: float = SCAN_RATE) -> None:
        async def scan_forever() -> None:
            n = 0
            while True:
                n += 1
                if self.scanner.port.plugged:
                    self.scanner.scan(Barcode(Symbology.CODE_128, f"CHAOS{n:07d}"))
                    self.load.sent += 1
                else:
                    self.load.while_unplugged += 1
                await asyncio.sleep(1 / rate)
        self._scanning = asyncio.run_coroutine_threadsafe(scan_forever(), self.sims.loop)  # type: ignore[assignment]

    def stop_scanning(self) -> None:
        scanning, self._scanning = self._scanning, None
        if scanning is None:
            return
        if scanning.done() and not scanning.cancelled():
            scanning.result()  # the load itself failed: say so rather than report a quiet scenario
        scanning.cancel()

    def unplug(self, sim: SimScanner | SimMcu) -> None:
        self.sims.run(sim.unplug())

    def replug(self, sim: SimScanner | SimMcu) -> None:
        self.sims.run(sim.replug())

    def beeps(self) -> int:
        """Rejected-scan beeps the MCU received: each one was sent after its event's commit."""
        async def count() -> int:
            return sum(1 for command in self.mcu.received if command == REJECTED_BEEP)
        return self.sims.run(count())

    # --- observing ---------------------------------------------------------------------------------

    def device_ids(self) -> list[str]:
        conn = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10)
        try:
            return [i for (i,) in conn.execute("SELECT id FROM events ORDER BY seq")]
        finally:
            conn.close()

    def pruned_ids(self) -> list[str]:
        """Events the device pruned after their ack (low disk): below its prune anchor, so their ids are only
        in the cloud now; the anchor's hash ties them to the device's chain. Empty unless the disk ran low."""
        conn = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'anchor_%'").fetchall())
        finally:
            conn.close()
        if "anchor_seq" not in meta:
            return []
        upto = int(meta["anchor_seq"])
        at_anchor = self._cloud_rows("SELECT hash FROM events WHERE device = ? AND seq = ?", (DEVICE, upto))
        if not at_anchor or at_anchor[0][0] != meta["anchor_hash"]:
            raise AssertionError(f"the cloud's event {upto} does not carry the device's prune anchor hash")
        rows = self._cloud_rows("SELECT id FROM events WHERE device = ? AND seq <= ? ORDER BY seq", (DEVICE, upto))
        return [i for (i,) in rows]

    def device_last_seq(self) -> int:
        """The store's head seq (its rows, or the prune anchor when a low disk pruned them all)."""
        conn = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=10)
        try:
            newest = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
            anchor = conn.execute("SELECT value FROM meta WHERE key = 'anchor_seq'").fetchone()
            return max(int(newest or 0), int(anchor[0]) if anchor else 0)
        finally:
            conn.close()

    def cloud_events_of(self, event_type: str) -> list[dict[str, Any]]:
        rows = self._cloud_rows("SELECT body FROM events WHERE device = ? AND type = ? ORDER BY seq",
                                (DEVICE, event_type))
        return [json.loads(body) for (body,) in rows]

    def cloud_types(self) -> dict[str, int]:
        return dict(self._cloud_rows("SELECT type, COUNT(*) FROM events WHERE device = ? GROUP BY type", (DEVICE,)))

    def cloud_status(self) -> dict[str, Any] | None:
        db = CloudDb(self.cloud_db)
        try:
            return next((d["status"] for d in db.device_view() if d["device"] == DEVICE), None)
        finally:
            db.close()

    def finish(self, timeout_s: float) -> Tally:
        """Stop the load, stop the agent as systemd would, let `flexedge sync` send what is left, and count.
        Produced = every event in the device's store; the cloud must hold each exactly once."""
        self.stop_scanning()
        if self.gps is not None:
            self.gps.stop()
        if self.agent_alive:
            self.stop_agent()
        self.produced = self.pruned_ids() + self.device_ids()
        self.start_sync()
        self.wait_cloud_has_all(timeout_s)
        self.stop_sync()
        return self.tally()

