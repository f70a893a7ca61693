"""The demo: a real mosquitto with mutual TLS, the reference cloud, several agents as real `flexedge run`
processes racing for the station's blocks, and simulated hardware for each (scanner, MCU, GPS receiver on
ptys; a camera that sees the house the van is parked at). Simulated drivers act on each agent's notices.

The orchestrator only plays the world: it scans the won block's labels (plus one package of no route),
drives the van along the route once loading is done, and shows the camera the house at each stop (the
neighbour's house first at one stop). Once the last block's van is driving, rain slows its part of town: the
cloud re-plans that block and sends the next route version. (The simulated driver keeps driving the first
order; the van re-sequences what is left when it arrives out of order.) Everything the agents decide, they
decide themselves; the report is read from the cloud's database and the agents' own stores.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cloud_sync.cloud.db import CloudDb, default_photo_dir
from cloud_sync.cloud.peer import CloudPeer, CloudSettings
from cloud_sync.cloud.planning.travel import RoadModelTimes, Slowdown
from cloud_sync.cloud.replanner import Replanner
from cloud_sync.cloud.web import actions as web_actions
from cloud_sync.cloud.web.accounts import Accounts, Role
from cloud_sync.cloud.web.server import HttpSettings, OperatorServer
from cloud_sync.pki import Pki
from device.contract.travel import distance_m
from device.demo.scenario import DEPOT, LOCKED_NOTE, PLAN_S, STATION, Scenario, make_scenario
from device.testbench.broker import MosquittoBroker
from device.testbench.codes import Barcode
from device.testbench.fleet import LocalFleet
from device.testbench.gps_route import DriveConfig, SimEpoch, SimStop, drive, feed_pty
from device.testbench.mcu import SimMcu
from device.testbench.pty import PtyPair, open_pty_pair
from device.testbench.scanner import ScannerBehaviour, SimScanner
from device.vision.synth import jpeg_bytes, render_photo
from firmware_bridge.scanner.parse import Symbology

log = logging.getLogger(__name__)

FLEET = "demo"
POLL_S = 0.5  # how often the orchestrator looks at the cloud's database
STATUS_EVERY_S = 5.0  # a status line at least this often
DRIVE_SPEEDUP = 15.0  # simulated seconds per real second while driving
AGENT_STOP_TIMEOUT_S = 15.0  # SIGTERM, then SIGKILL
PHOTO_WAIT_S = 60.0  # after the last block completes, how long the photos may take to reach the cloud
RAIN_FACTOR = 1.6  # travel times in the rained-on part of town
OPERATOR = "demo"  # the operator page's account (`--http`), with a new password each run
PAGE_LIVE_S = 1.0  # the page's live updates look at the database this often
STATUS_INTERVAL_S = 5  # the agents' retained status: short, so the page follows them closely


def _sscc_barcode(package_id: str) -> Barcode:
    return Barcode(Symbology.GS1_128, "00" + package_id)  # AI (00): the SSCC on a parcel label


@dataclass
class AgentProc:
    """One agent process and the simulated hardware wired to it."""

    device: str
    workdir: Path
    scanner: SimScanner
    mcu: SimMcu
    gps_pty: PtyPair
    camera_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    block: str | None = None
    phase: str = "starting"
    scanned: bool = False
    driving: threading.Thread | None = None
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def store_path(self) -> Path:
        return self.workdir / "data" / "events.db"


class Demo:
    def __init__(self, workdir: Path, *, seed: int = 7, duration_s: float = 90.0, agents: int = 3,
                 blocks: int = 2, stops: int = 4, progress: Callable[[str], None] = print,
                 http: tuple[str, int] | None = None) -> None:
        self.workdir = workdir
        self.http = http  # (host, port): serve the operator page over the demo's cloud (plain HTTP)
        self.page: OperatorServer | None = None
        self.seed = seed
        self.duration_s = duration_s
        self.scenario: Scenario = make_scenario(seed, blocks, stops)
        self.agent_count = agents
        self.progress = progress
        self.agents: list[AgentProc] = []
        self.broker: MosquittoBroker | None = None
        self.cloud_db = workdir / "cloud.db"
        self._rng = np.random.default_rng(seed)
        self._scene_counter = 0
        self._replanner: Replanner | None = None
        self._rained = False

    # --- set-up --------------------------------------------------------------------------------------

    def _agent_config(self, agent: AgentProc, pki: Pki) -> Path:
        if self.broker is None:
            raise RuntimeError("start the broker before the agents")
        issued = pki.client(agent.device)
        text = f"""
data_dir = "{agent.workdir / 'data'}"

[device]
id = "{agent.device}"
fleet = "{FLEET}"
station = "{STATION}"
role = "vehicle"

[mqtt]
host = "127.0.0.1"
port = {self.broker.port}
tls = true
ca_file = "{pki.ca_cert}"
cert_file = "{issued.cert_path}"
key_file = "{issued.key_path}"
keepalive_s = 10

[sync]
cloud_key_file = "{pki.signing_pub}"
ack_timeout_s = 5.0
status_interval_s = {STATUS_INTERVAL_S}

[scanner]
port = "{agent.scanner.path}"

[mcu]
port = "{agent.mcu.path}"

[gps]
source = "serial"
serial_port = "{agent.gps_pty.port}"
dwell_s = 8.0
depart_confirm_s = 4.0

[camera]
backend = "simulated"
sim_dir = "{agent.camera_dir}"
live_scene = true

[driver]
simulated = true
seed = {self.seed + len(self.agents)}

[logging]
level = "INFO"
"""
        path = agent.workdir / "flexedge.toml"
        path.write_text(text)
        return path

    def _show_scene(self, agent: AgentProc, number: str | None, extra: Sequence[str] = ()) -> None:
        """What the camera sees now: the house in front of the van (and then whatever else is listed). The new
        scene is in place before the old one goes: a capture in between never finds the folder empty."""
        old = list(agent.camera_dir.glob("*.jpg"))
        for text in [number, *extra]:
            self._scene_counter += 1
            photo = render_photo(self._rng, text=text, with_number=text is not None)
            tmp = agent.camera_dir / f".{self._scene_counter:05d}.tmp"
            tmp.write_bytes(jpeg_bytes(photo))
            os.replace(tmp, agent.camera_dir / f"{self._scene_counter:05d}.jpg")
        for path in old:
            path.unlink(missing_ok=True)

    async def _start_agent(self, index: int, pki: Pki) -> AgentProc:
        device = f"van-{index + 1:02d}"
        workdir = self.workdir / device
        (workdir / "camera").mkdir(parents=True, exist_ok=True)
        scanner = SimScanner(str(workdir / "scanner"), ScannerBehaviour(interval_s=0.05, seed=index))
        mcu = SimMcu(str(workdir / "mcu"))
        await scanner.start()
        await mcu.start()
        agent = AgentProc(device, workdir, scanner, mcu, open_pty_pair(), workdir / "camera")
        self._show_scene(agent, None)  # the loading dock: no house number in view
        config = self._agent_config(agent, pki)
        log_file = open(workdir / "agent.log", "wb")
        agent.proc = subprocess.Popen([sys.executable, "-m", "device.cli", "run", "--config", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=log_file)
        log_file.close()
        self.agents.append(agent)
        return agent

    # --- the world reacting to the agents ----------------------------------------------------------------

    def _cloud_events(self, conn: sqlite3.Connection, device: str) -> list[tuple[str, dict[str, Any]]]:
        rows = conn.execute("SELECT type, body FROM events WHERE device = ? ORDER BY seq", [device]).fetchall()
        return [(t, json.loads(b)) for t, b in rows]

    async def _react(self, conn: sqlite3.Connection, agent: AgentProc) -> None:
        events = self._cloud_events(conn, agent.device)
        types = Counter(t for t, _ in events)
        agent.counts = types
        claimed = [doc for t, doc in events if t == "block.claimed"]
        if claimed and agent.block is None:
            agent.block = claimed[-1]["block"]
            self.progress(f"  {agent.device} won {agent.block}")
        block = agent.block
        if block and not agent.scanned and types["route.received"]:
            agent.scanned = True
            route = self.scenario.route(block)
            codes = [_sscc_barcode(p.id) for s in route.stops for p in s.packages]
            codes.insert(len(codes) // 2, _sscc_barcode(self.scenario.wrong_package))  # on no route
            asyncio.get_running_loop().create_task(agent.scanner.run_script(codes))
            self.progress(f"  {agent.device} loading {len(codes) - 1} packages (+1 that is not on its route)")
        if types["loading.complete"] and agent.driving is None:
            agent.driving = threading.Thread(target=self._drive, args=(agent,), daemon=True,
                                             name=f"drive-{agent.device}")
            agent.driving.start()
            self.progress(f"  {agent.device} loaded, driving {agent.block}")
            if block == self.scenario.blocks[-1][0].id and not self._rained:
                self._rained = True
                await self._rain(block)
        agent.phase = _phase(types)

    async def _rain(self, block_id: str) -> None:
        """A weather factor over the block's part of town: the cloud re-plans it, the van gets a new version."""
        if self._replanner is None:
            return
        route = self.scenario.route(block_id)
        lat = sum(s.lat for s in route.stops) / len(route.stops)
        lon = sum(s.lon for s in route.stops) / len(route.stops)
        radius = max(distance_m(lat, lon, s.lat, s.lon) for s in route.stops) + 100.0
        revised = await self._replanner.apply(Slowdown("rain", lat, lon, radius, RAIN_FACTOR))
        for r in revised:
            self.progress(f"cloud: rain x{RAIN_FACTOR} over {block_id}'s area: re-planned, route v{r.version} "
                          f"sent ({' '.join(s.id for s in r.stops)})")

    def _drive(self, agent: AgentProc) -> None:
        """The van's receiver: NMEA at DRIVE_SPEEDUP, the camera's scene following the van."""
        if agent.block is None:
            return
        route = self.scenario.route(agent.block)
        by_id = {s.id: s for s in route.stops}
        wrong_stop = self.scenario.wrong_house_stops.get(agent.block)
        config = DriveConfig(parked_s=60.0, parked_jitter_m=8.0, seed=self.seed)
        shown: list[str | None] = [None]

        def epochs() -> Iterator[SimEpoch]:
            for epoch in drive([SimStop(s.id, s.lat, s.lon) for s in route.stops], config, depot=DEPOT):
                if epoch.parked_at != shown[0] and epoch.parked_at is not None:
                    stop = by_id[epoch.parked_at]
                    if all(p.note == LOCKED_NOTE for p in stop.packages):
                        pass  # behind a locked gate: no photo is taken, so no scene (it would be the next stop's)
                    elif stop.id == wrong_stop:  # the driver first points the camera at the neighbour's house
                        neighbour = str(int(stop.house_number) + 2)
                        self._show_scene(agent, neighbour, [stop.house_number, stop.house_number])
                    else:
                        self._show_scene(agent, stop.house_number, [stop.house_number, stop.house_number])
                shown[0] = epoch.parked_at or shown[0]
                yield epoch
        try:
            feed_pty(agent.gps_pty.master_fd, epochs(), config, speedup=DRIVE_SPEEDUP)
        except OSError as exc:  # the demo ended while driving
            log.info("drive of %s ended: %s", agent.device, exc)

    # --- the run -------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        devices = [f"van-{i + 1:02d}" for i in range(self.agent_count)]
        fleet = LocalFleet.create(self.workdir / "pki", FLEET, {d: STATION for d in devices})
        pki = fleet.pki
        self.broker = MosquittoBroker(self.workdir / "broker", extra_config=fleet.mosquitto_config())
        cloud_task = None
        try:
            self.broker.start()
            self.progress(f"broker: mosquitto with mutual TLS on 127.0.0.1:{self.broker.port}")
            peer = CloudPeer(CloudSettings(FLEET, self.cloud_db, stations=fleet.stations),
                             fleet.cloud_credentials(self.broker.port), fleet.signer)
            cloud_task = asyncio.create_task(peer.run())
            await asyncio.wait_for(peer.ready.wait(), 20)
            await peer.add_blocks(list(self.scenario.blocks))
            self._replanner = Replanner(peer, CloudDb(self.cloud_db), RoadModelTimes(), PLAN_S)
            if self.http is not None:
                await self._start_page(peer)
            self.progress(f"cloud: {len(self.scenario.blocks)} blocks offered at station {STATION}: "
                          + ", ".join(f"{b.id} ({len(r.stops)} stops)" for b, r in self.scenario.blocks))
            for i in range(self.agent_count):
                await self._start_agent(i, pki)
            self.progress(f"agents: {', '.join(devices)} started, racing for the blocks")
            await self._watch(started)
        finally:
            await self._stop_agents()
            if self.page is not None:
                await self.page.stop()
            if cloud_task is not None:
                await asyncio.sleep(1.0)  # the last batches of the stopping agents
                peer.stop()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cloud_task, 10)
            for agent in self.agents:
                with contextlib.suppress(Exception):
                    await agent.scanner.stop()
                with contextlib.suppress(Exception):
                    await agent.mcu.stop()
                agent.gps_pty.close()
            if self.broker is not None:
                self.broker.stop()
            if self._replanner is not None:
                self._replanner.db.close()
        return self.report(time.monotonic() - started)

    async def _start_page(self, peer: CloudPeer) -> None:
        """The operator page over the demo's cloud database, with an operator account made for this run."""
        assert self.http is not None
        accounts_path = self.workdir / "operators.sqlite"
        password = secrets.token_urlsafe(12)
        accounts = Accounts(accounts_path)
        try:
            accounts.add(OPERATOR, password, Role.OPERATOR)
        finally:
            accounts.close()
        host, port = self.http
        self.page = OperatorServer(HttpSettings(host, port, self.cloud_db, accounts_path, live_interval_s=PAGE_LIVE_S),
                                   web_actions.reoffer(self.cloud_db, peer.add_blocks, peer.publish_command))
        await self.page.start()
        self.progress(f"operator page: {self.page.url} (log in as {OPERATOR}, password {password})")

    async def _watch(self, started: float) -> None:
        conn = sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True, timeout=5)
        last_line, last_shown = "", 0.0
        try:
            while time.monotonic() - started < self.duration_s:
                await asyncio.sleep(POLL_S)
                for agent in self.agents:
                    if agent.proc is not None and agent.proc.poll() is not None:
                        raise RuntimeError(f"agent {agent.device} exited with {agent.proc.returncode}; "
                                           f"see {agent.workdir / 'agent.log'}")
                    await self._react(conn, agent)
                line = "  " + " | ".join(f"{a.device} {a.phase}" for a in self.agents)
                if line != last_line or time.monotonic() - last_shown > STATUS_EVERY_S:
                    events = sum(sum(a.counts.values()) for a in self.agents)
                    self.progress(f"{line}   [{time.monotonic() - started:4.0f} s, {events} events in the cloud]")
                    last_line, last_shown = line, time.monotonic()
                winners = [a for a in self.agents if a.block]
                if len(winners) == len(self.scenario.blocks) and all(a.counts["block.completed"] for a in winners):
                    self.progress("all blocks complete")
                    await self._wait_photos(conn)
                    return
            self.progress(f"duration of {self.duration_s:.0f} s reached")
        finally:
            conn.close()

    async def _wait_photos(self, conn: sqlite3.Connection) -> None:
        """The proof photos go up after the events: wait until the cloud holds every one the agents committed."""
        deadline = time.monotonic() + PHOTO_WAIT_S
        while True:
            taken, in_cloud = self._photos_taken(), _photos_in_cloud(conn)
            if in_cloud >= taken or time.monotonic() > deadline:
                self.progress(f"proof photos: {in_cloud} of {taken} in the cloud")
                return
            await asyncio.sleep(POLL_S)

    def _photos_taken(self) -> int:
        """Proof photos the agents committed (their event stored): what must reach the cloud."""
        taken = 0
        for agent in self.agents:
            if agent.store_path.exists():
                conn = sqlite3.connect(f"file:{agent.store_path}?mode=ro", uri=True, timeout=5)
                try:
                    taken += conn.execute("SELECT COUNT(*) FROM photos WHERE queued_at IS NOT NULL").fetchone()[0]
                finally:
                    conn.close()
        return taken

    async def _stop_agents(self) -> None:
        for agent in self.agents:
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + AGENT_STOP_TIMEOUT_S
        for agent in self.agents:
            if agent.proc is None:
                continue
            while agent.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if agent.proc.poll() is None:
                log.warning("agent %s did not stop: killing it", agent.device)
                agent.proc.kill()
                agent.proc.wait()

    # --- the report ----------------------------------------------------------------------------------

    def report(self, elapsed_s: float) -> dict[str, Any]:
        produced: dict[str, set[str]] = {}
        pending: set[str] = set()
        for agent in self.agents:
            if not agent.store_path.exists():
                produced[agent.device] = set()
                continue
            conn = sqlite3.connect(f"file:{agent.store_path}?mode=ro", uri=True)
            produced[agent.device] = {i for (i,) in conn.execute("SELECT id FROM events")}
            pending |= {i for (i,) in conn.execute("SELECT id FROM events WHERE acked = 0")}
            conn.close()
        conn = sqlite3.connect(f"file:{self.cloud_db}?mode=ro", uri=True)
        rows = conn.execute("SELECT device, id, type, body FROM events").fetchall()
        winners = conn.execute("SELECT id, winner FROM blocks").fetchall()
        broken = conn.execute("SELECT COUNT(*) FROM flags").fetchone()[0]
        photos = conn.execute("SELECT status, size FROM photo_files").fetchall()
        conn.close()
        stored_ids = Counter(i for _, i, _, _ in rows)
        all_produced = set().union(*produced.values()) if produced else set()
        docs = [(t, json.loads(b)) for _, _, t, b in rows]
        verdicts = Counter(d["data"]["verdict"] for t, d in docs if t == "photo.checked")
        completed = [d["data"] for t, d in docs if t == "block.completed"]
        return {
            "seed": self.seed,
            "seconds": round(elapsed_s, 1),
            "agents": len(self.agents),
            "blocks_offered": len(self.scenario.blocks),
            "blocks_claimed": sum(1 for _, w in winners if w),
            "winners": {b: w for b, w in winners},
            "blocks_completed": len(completed),
            "stops_delivered": sum(c.get("stops_delivered", 0) + c.get("stops_partial", 0) for c in completed),
            "packages_delivered": sum(c.get("delivered", 0) for c in completed),
            "exceptions": sum(c.get("exceptions", 0) for c in completed),
            "photo_checks": dict(verdicts),
            "wrong_package_caught": sum(1 for t, d in docs if t == "package.rejected"
                                        and d["data"].get("package") == self.scenario.wrong_package),
            "wrong_house_caught": verdicts.get("mismatch", 0),
            "events_produced": len(all_produced),
            "events_stored": len(stored_ids),
            "pending_in_outboxes": len(pending - set(stored_ids)),  # kept on the device, sent on next start
            "lost": len(all_produced - set(stored_ids) - pending),
            "duplicates": sum(n - 1 for n in stored_ids.values() if n > 1),
            "chain_flags": broken,
            "photos_taken": self._photos_taken(),
            "photos_in_cloud": len(photos),
            "photo_sha_mismatch": sum(1 for status, _ in photos if status in ("sha_mismatch", "corrupt")),
            "photos_awaiting_event": sum(1 for status, _ in photos if status == "awaiting_event"),
            "upload_bytes_mean": round(sum(size for _, size in photos) / len(photos)) if photos else 0,
            "photo_dir": str(default_photo_dir(self.cloud_db)),
            "mcu_commands": {a.device: len(a.mcu.received) for a in self.agents},  # LED/buzzer patterns received
            "route_revisions": sum(1 for t, _ in docs if t == "route.revised"),  # the cloud's re-plans applied
            "resequenced": Counter(d["data"]["reason"] for t, d in docs if t == "route.resequenced"),
            "summaries": completed,
        }


def _phase(types: Counter[str]) -> str:
    for event_type, phase in (("block.completed", "complete"), ("stop.arrived", "delivering"),
                              ("loading.complete", "on route"), ("route.received", "loading"),
                              ("block.claimed", "claimed"), ("block.claim_requested", "claiming"),
                              ("agent.started", "waiting")):
        if types[event_type]:
            return phase
    return "starting"


def _photos_in_cloud(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM photo_files").fetchone()[0])
