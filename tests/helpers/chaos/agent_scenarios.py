"""Fault scenarios against the whole agent (`flexedge run` on simulated hardware, see agent_rig.py): the agent
SIGKILLed under load, serial devices unplugged mid-scan, gpsd killed, the disk filling up. Each ends like the
sync scenarios (lost 0, duplicates 0, chains intact) and adds its own checks, said in words when they fail."""
from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Callable

from tests.helpers.chaos.agent_rig import SCAN_RATE, AgentRig
from tests.helpers.chaos.scenarios import DRAIN_TIMEOUT_S, Result, Scale, scenario_dirs
from tests.helpers.fleet import FleetPki

WAIT_S = 30.0  # for a state the agent should reach (the cloud sees a restart, a status, a track point)


def _wait(condition: Callable[[], bool], timeout_s: float = WAIT_S, step_s: float = 0.1) -> float | None:
    """Seconds until `condition()` held, or None when it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(step_s)
    return None


def _agent_checks(rig: AgentRig, beeps: int, failures: list[str]) -> str:
    """Checks every agent scenario shares: a beep means committed, and the scans made it through."""
    types = rig.cloud_types()
    committed = types.get("input.rejected", 0)
    if beeps > committed:
        failures.append(f"{beeps} beeps for {committed} committed scans: feedback went out before a commit")
    if rig.load.sent and committed == 0:
        failures.append("no scan reached the cloud")
    if committed > rig.load.sent:
        failures.append(f"{committed} scans committed but only {rig.load.sent} sent: phantom scans")
    # Seqs are gapless: the cloud holding seq 1..N and the device's head at N means nothing is missing, even
    # what a low disk pruned from the device after its ack.
    last_seq, in_cloud = rig.device_last_seq(), rig.cloud_count()
    if last_seq != in_cloud:
        failures.append(f"device head seq {last_seq}, cloud holds {in_cloud} events")
    return (f"scans sent {rig.load.sent}, committed {committed}, beeped after commit {beeps}, "
            f"track points {types.get('gps.fix', 0)}")


def _started_in_cloud(rig: AgentRig) -> int:
    return rig.cloud_types().get("agent.started", 0)


def _start(rig: AgentRig, failures: list[str]) -> int:
    """The agent up and in the cloud, the scanner going; returns the agent's pid."""
    rig.start_agent()
    rig.start_scanning()
    if _wait(lambda: _started_in_cloud(rig) >= 1) is None:
        failures.append("the agent never reached the cloud")
    return rig.agent.pid if rig.agent else -1


def _same_process(rig: AgentRig, pid: int, fault: str, failures: list[str]) -> None:
    """Faults of the hardware around the agent must not take the agent down: the same process runs on."""
    if not rig.agent_alive or rig.agent is None or rig.agent.pid != pid:
        failures.append(f"the agent did not survive {fault} in one process")


def agent_sigkill(rig: AgentRig, scale: Scale, rng: random.Random) -> Result:
    """`flexedge run` SIGKILLed at random moments under a steady scan load and restarted at once, as systemd's
    Restart=always does. Each restart must be back in the cloud (its agent.started event) before the next kill."""
    failures: list[str] = []
    _start(rig, failures)
    restart_s: list[float] = []
    for _ in range(scale.rounds):
        time.sleep(rng.uniform(0.2, 1.5))
        rig.kill_agent()
        killed = time.monotonic()
        rig.start_agent()
        if _wait(lambda: _started_in_cloud(rig) >= rig.agent_starts) is None:
            failures.append(f"restart {rig.agent_starts} not seen in the cloud within {WAIT_S:.0f} s")
            break
        restart_s.append(time.monotonic() - killed)
    time.sleep(1.0)  # steady load after the last restart
    beeps = rig.beeps()
    ended = time.monotonic()
    tally = rig.finish(DRAIN_TIMEOUT_S)
    extra = _agent_checks(rig, beeps, failures)
    slowest = max(restart_s, default=0.0)
    return Result("agent_sigkill", tally, time.monotonic() - ended,
                  f"{scale.rounds} SIGKILLs of flexedge run, kill to back in the cloud <= {slowest:.1f} s; {extra}",
                  rig.store_intact(), tuple(failures))


def serial_replug(rig: AgentRig, scale: Scale, rng: random.Random) -> Result:
    """The scanner and the MCU unplugged and plugged back in mid-scan (a new pty behind the same by-id path).
    The agent keeps running (same process), reads scans again and its MCU link comes back after each replug."""
    failures: list[str] = []
    pid = _start(rig, failures)
    replug_s: list[float] = []
    for n in range(scale.rounds):
        time.sleep(rng.uniform(0.5, 1.5))
        devices = [rig.scanner, rig.mcu] if n % 2 == 0 else [rig.scanner]
        for device in devices:
            rig.unplug(device)
        time.sleep(rng.uniform(0.3, 1.0))
        for device in devices:
            rig.replug(device)
        replugged, beeps_then = time.monotonic(), rig.beeps()
        # Back means: a scan after the replug was read, committed and beeped through the re-handshaken MCU link.
        if _wait(lambda then=beeps_then: rig.beeps() > then + 2) is None:
            failures.append(f"replug {n + 1}: no scan read and beeped within {WAIT_S:.0f} s")
            break
        replug_s.append(time.monotonic() - replugged)
    time.sleep(1.0)
    beeps = rig.beeps()
    _same_process(rig, pid, "the unplugs", failures)
    ended = time.monotonic()
    tally = rig.finish(DRAIN_TIMEOUT_S)
    extra = _agent_checks(rig, beeps, failures)
    committed = rig.cloud_types().get("input.rejected", 0)
    # A scan still in the pty when the cable goes is gone with it (no beep: the driver scans again); at most
    # a few per unplug at this rate. More than that would be the agent dropping what it read.
    if committed < rig.load.sent - 3 * scale.rounds:
        failures.append(f"only {committed} of {rig.load.sent} scans committed")
    return Result("serial_replug", tally, time.monotonic() - ended,
                  f"{scale.rounds} scanner unplugs ({(scale.rounds + 1) // 2} with the MCU), agent pid unchanged, "
                  f"replug to next beep <= {max(replug_s, default=0.0):.1f} s; {extra}",
                  rig.store_intact(), tuple(failures))


def gpsd_restart(rig: AgentRig, scale: Scale, rng: random.Random) -> Result:
    """gpsd (with its gpsfake feed) killed and started again; the agent's GPS source reconnects by itself and
    the track resumes, the agent process never restarting."""
    failures: list[str] = []
    pid = _start(rig, failures)

    def track_points() -> int:
        return rig.cloud_types().get("gps.fix", 0)

    if _wait(lambda: track_points() > 0) is None:
        failures.append("no track point reached the cloud")
    resumed_s: list[float] = []
    for n in range(scale.rounds):
        time.sleep(rng.uniform(0.5, 2.0))
        rig.kill_gpsd()
        time.sleep(rng.uniform(0.5, 2.0))
        rig.start_gpsd()
        restarted, before = time.monotonic(), track_points()
        if _wait(lambda then=before: track_points() > then) is None:
            failures.append(f"restart {n + 1}: the track did not resume within {WAIT_S:.0f} s")
            break
        resumed_s.append(time.monotonic() - restarted)
    beeps = rig.beeps()
    _same_process(rig, pid, "the gpsd restarts", failures)
    ended = time.monotonic()
    tally = rig.finish(DRAIN_TIMEOUT_S)
    extra = _agent_checks(rig, beeps, failures)
    return Result("gpsd_restart", tally, time.monotonic() - ended,
                  f"{scale.rounds} gpsd kills, gpsd back to a new track point in the cloud <= "
                  f"{max(resumed_s, default=0.0):.1f} s; {extra}", rig.store_intact(), tuple(failures))


def agent_disk_full(rig: AgentRig, scale: Scale, rng: random.Random) -> Result:
    """The agent's data disk (a real small tmpfs) fills up while scans arrive: scans are refused (a notice and
    an attention signal, no beep of acceptance), the agent reports `storage: full` in its retained status,
    keeps running, and once space returns it records the episode (`store.full`) and takes scans again."""
    assert rig.data_dir is not None
    failures: list[str] = []
    pid = _start(rig, failures)
    filler = _fill(rig.data_dir, leave_bytes=96 * 1024)

    def storage() -> str | None:
        status = rig.cloud_status()
        return status.get("storage") if status else None

    full_after = _wait(lambda: storage() == "full", step_s=0.05)
    if full_after is None:
        failures.append("the cloud never saw storage: full in the agent's status")
    time.sleep(2.0)  # full for a while, scans keep coming
    filler.unlink()  # space returns
    back_after = _wait(lambda: storage() in ("ok", "low") and rig.cloud_types().get("store.full", 0) > 0)
    if back_after is None:
        failures.append("after space returned: no storage-ok status or no store.full episode in the cloud")
    time.sleep(1.0)
    beeps = rig.beeps()
    _same_process(rig, pid, "the full disk", failures)
    tally = rig.finish(DRAIN_TIMEOUT_S)
    extra = _agent_checks(rig, beeps, failures)
    episode = rig.cloud_events_of("store.full")
    refused = episode[0]["data"]["refused_events"] if episode else 0
    if episode and refused < 1:
        failures.append("the store.full episode counts no refused event")
    return Result("agent_disk_full", tally, back_after or 0.0,
                  f"status said full {full_after or 0:.1f} s after the disk filled; episode recorded: "
                  f"{len(episode)}, events refused while full {refused}; {extra}", rig.store_intact(),
                  tuple(failures))


def _fill(directory: Path, leave_bytes: int) -> Path:
    """Take the filesystem's free space with one file, leaving `leave_bytes` for the agent to run into."""
    filler = directory / "filler"
    st = os.statvfs(directory)
    size = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        chunk = b"\0" * 65536
        while size > 0:
            size -= os.write(fd, chunk[:min(len(chunk), size)])
    finally:
        os.close(fd)
    return filler


AGENT_SCENARIOS: dict[str, Callable[[AgentRig, Scale, random.Random], Result]] = {
    "agent_sigkill": agent_sigkill,
    "serial_replug": serial_replug,
    "gpsd_restart": gpsd_restart,
    "agent_disk_full": agent_disk_full,
}


def run_agent_scenario(name: str, fleet: FleetPki, scale: Scale, seed: int = 9) -> Result:
    with contextlib.ExitStack() as stack:
        work, data_dir = scenario_dirs(stack, name, "4m" if name == "agent_disk_full" else None)
        rig = AgentRig(work, fleet, data_dir=data_dir)
        stack.callback(rig.close)
        rig.start()
        return AGENT_SCENARIOS[name](rig, scale, random.Random(seed))


__all__ = ["AGENT_SCENARIOS", "SCAN_RATE", "run_agent_scenario"]
