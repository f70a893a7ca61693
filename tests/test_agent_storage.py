"""The agent on a disk that fills up: scans are refused with a clear notice, the condition is reported (systemd
status here; the cloud's retained status in the chaos scenario), and once space returns the agent records the
episode and takes scans again. A real 1 MiB tmpfs, a real store, a real sd_notify datagram socket."""
from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from device.agent import Agent
from device.contract.domain import EventType, Role
from device.sdnotify import Notifier
from device.store import DiskCondition, EventStore
from device.workflow import RejectReason
from device.workflow.runner import WorkflowRunner


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem with one file (what a runaway log does on a van)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: the disk is full
        pass
    finally:
        os.close(fd)
    return filler


def _statuses(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_full_disk_is_reported_and_recorded_once_space_returns(small_fs: Path, tmp_path: Path) -> None:
    asyncio.run(_full_disk_scenario(small_fs, tmp_path))


async def _full_disk_scenario(small_fs: Path, tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    store = EventStore(small_fs / "events.db")
    try:
        agent = Agent(store=store, runner=await WorkflowRunner.open(store, Role.VEHICLE), role=Role.VEHICLE,
                      notifier=Notifier({"NOTIFY_SOCKET": str(notify_path)}))
        watch = asyncio.create_task(agent.storage_loop(interval_s=0.05))
        accepted_before = await agent.scan("PKG-BEFORE")
        assert accepted_before.events  # the rejected scan (no block yet) is itself a committed event

        filler = _fill(small_fs)
        refused = None
        for n in range(200):  # the last pages the filler left go to a few more scans, then the disk is full
            outcome = await agent.scan(f"PKG-FULL-{n:03d}")
            if outcome.rejection is not None and outcome.rejection.reason is RejectReason.STORE_UNAVAILABLE:
                refused = outcome
                break
        assert refused is not None, "the store never refused a scan on a full disk"
        assert refused.notices[0].text == "could not save: storage problem"
        assert store.disk_condition is DiskCondition.FULL
        await asyncio.sleep(0.3)
        assert any("STORAGE FULL" in s for s in _statuses(sock))

        filler.unlink()  # space returns
        for _ in range(100):
            await asyncio.sleep(0.05)
            if store.disk_condition is not DiskCondition.FULL:
                break
        assert store.disk_condition is not DiskCondition.FULL
        await asyncio.sleep(0.2)
        assert any(s.startswith("STATUS=storage ok") for s in _statuses(sock))
        after = await agent.scan("PKG-AFTER")
        assert after.events and after.rejection is not None
        assert after.rejection.reason is not RejectReason.STORE_UNAVAILABLE
        watch.cancel()
    finally:
        store.close()
    with EventStore(small_fs / "events.db") as reopened:
        events = reopened.events(0, 10_000)
        episodes = [e for e in events if e["type"] == EventType.STORE_FULL.value]
        assert len(episodes) == 1
        assert episodes[0]["data"]["refused_events"] >= 1
        assert reopened.integrity_check() == "ok" and reopened.verify_chain().ok
    sock.close()
