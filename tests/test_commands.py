"""The command framework over a real store: each command answers once with a committed `command.result`, a replay
does nothing, a command that finishes after a restart leaves a marker its Resume picks up."""
from __future__ import annotations

import asyncio
import json
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from device.cloud_port import CloudCommand
from device.commands import (
    CommandContext,
    CommandExecutor,
    CommandOutcome,
    CommandRegistry,
    Deferred,
    PendingMarker,
    Status,
    result_event_id,
)
from device.store import EventStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "events.db") as s:
        yield s


def results(store: EventStore) -> list[dict[str, Any]]:
    return [e["data"] for e in store.events() if e["type"] == "command.result"]


async def echo(command: CloudCommand, context: CommandContext) -> CommandOutcome:
    if "word" not in command.args:
        return CommandOutcome(Status.REJECTED, "args.word missing")
    return CommandOutcome(Status.OK, "echoed", {"word": command.args["word"]})


async def broken(command: CloudCommand, context: CommandContext) -> CommandOutcome:
    raise RuntimeError("disk on fire")


async def later(command: CloudCommand, context: CommandContext) -> Deferred:
    return Deferred("applying after a restart", {"before": 1}, timeout_s=30.0)


async def finish(marker: PendingMarker, context: CommandContext) -> CommandOutcome:
    return CommandOutcome(Status.OK, "kept", {"starts": marker.starts, "before": marker.state["before"]})


def executor(store: EventStore, data_dir: Path, restarts: list[str]) -> CommandExecutor:
    registry = CommandRegistry()
    registry.register("echo", echo)
    registry.register("broken", broken)
    registry.register("later", later, resume=finish)
    return CommandExecutor(registry, CommandContext(store, data_dir, None, None), restarts.append)


def test_each_command_answers_once_with_a_committed_result(store: EventStore, tmp_path: Path) -> None:
    restarts: list[str] = []
    commands = executor(store, tmp_path, restarts)

    async def scenario() -> list[CommandOutcome | None]:
        return [await commands.execute(CloudCommand("c1", "echo", {"word": "hi"})),
                await commands.execute(CloudCommand("c2", "echo", {})),
                await commands.execute(CloudCommand("c3", "launch_missiles", {})),
                await commands.execute(CloudCommand("c4", "broken", {})),
                await commands.execute(CloudCommand("c1", "echo", {"word": "again"}))]  # a replay
    outcomes = asyncio.run(scenario())
    assert outcomes[-1] is None
    answers = results(store)
    assert [(a["id"], a["status"]) for a in answers] == [("c1", "ok"), ("c2", "rejected"), ("c3", "rejected"),
                                                         ("c4", "failed")]
    assert answers[0]["data"] == {"word": "hi"} and answers[2]["detail"] == "unknown command"
    assert answers[3]["detail"] == "RuntimeError: disk on fire"
    assert [e["id"] for e in store.events() if e["type"] == "command.result"][0] == result_event_id("c1")
    assert (commands.counters.ok, commands.counters.rejected, commands.counters.failed,
            commands.counters.replays) == (1, 2, 1, 1)
    assert restarts == []


def test_a_deferred_command_restarts_and_is_finished_by_the_next_start(store: EventStore, tmp_path: Path) -> None:
    restarts: list[str] = []
    asyncio.run(executor(store, tmp_path, restarts).execute(CloudCommand("c9", "later", {"x": 1})))
    assert results(store) == [] and len(restarts) == 1
    assert PendingMarker.note_start(tmp_path) is not None  # `flexedge run` counts the start before assembling

    # Another command while one is pending is refused; the next start's resume answers the pending one.
    after: list[str] = []
    commands = executor(store, tmp_path, after)
    busy = asyncio.run(commands.execute(CloudCommand("c10", "echo", {"word": "x"})))
    assert busy is not None and busy.status is Status.REJECTED and "c9" in busy.detail
    asyncio.run(commands.resume_pending())
    assert [(a["id"], a["status"], a["data"]) for a in results(store)] == [
        ("c10", "rejected", {}), ("c9", "ok", {"starts": 1, "before": 1})]
    assert PendingMarker.load(tmp_path) is None and after == []
    assert asyncio.run(commands.resume_pending()) is None  # nothing left to finish


def test_an_unreadable_marker_is_removed_and_the_agent_starts(store: EventStore, tmp_path: Path) -> None:
    PendingMarker.path(tmp_path).write_text("{torn")
    assert PendingMarker.note_start(tmp_path) is None and not PendingMarker.path(tmp_path).exists()


# --- set_config and upload_logs on real files --------------------------------------------------------------

def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "flexedge.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n[device]\nid = "van-9"\n[sync]\nack_timeout_s = 3.0\n')
    return path


def _set(tmp_path: Path, store: EventStore, args: dict[str, Any]) -> CommandOutcome | Deferred:
    from device.commands.config_change import set_config

    context = CommandContext(store, tmp_path, tmp_path / "flexedge.toml", None)
    return asyncio.run(set_config(CloudCommand("s1", "set_config", args), context))


@pytest.mark.parametrize(("args", "problem"), [
    ({"mqtt.port": 0}, "mqtt.port"),
    ({"mqtt": {"prot": 1}}, "mqtt.prot"),
    ({"device.id": "van-evil"}, "device.id"),
    ({"data_dir": "/tmp"}, "data_dir"),
    ({"mqtt": {"tls": {"deep": 1}}}, "mqtt.tls"),
    ({}, "no settings"),
])
def test_set_config_refuses_before_touching_the_file(tmp_path: Path, store: EventStore, args: dict[str, Any],
                                                     problem: str) -> None:
    before = _config_file(tmp_path).read_bytes()
    outcome = _set(tmp_path, store, args)
    assert isinstance(outcome, CommandOutcome) and outcome.status is Status.REJECTED and problem in outcome.detail
    assert (tmp_path / "flexedge.toml").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("flexedge", ".flexedge"))) == \
        ["flexedge.toml"]


def test_set_config_keeps_the_previous_file_and_a_crash_loop_rolls_it_back(tmp_path: Path,
                                                                           store: EventStore) -> None:
    from device.commands.config_change import recover_before_start

    before = _config_file(tmp_path).read_bytes()
    outcome = _set(tmp_path, store, {"sync.ack_timeout_s": 9.5, "logging": {"level": "DEBUG"}})
    assert isinstance(outcome, Deferred) and outcome.state["changed"] == ["logging.level", "sync.ack_timeout_s"]
    assert (tmp_path / "flexedge.toml").read_bytes() == before  # nothing changes before the marker is written
    assert (tmp_path / "flexedge.toml.previous").read_bytes() == before
    marker = PendingMarker("s1", "set_config", {}, dict(outcome.state), outcome.timeout_s)
    marker.save(tmp_path)
    assert outcome.apply is not None
    outcome.apply()
    written = tomllib.loads((tmp_path / "flexedge.toml").read_text())
    assert written["sync"] == {"ack_timeout_s": 9.5} and written["logging"] == {"level": "DEBUG"}
    for start in range(1, 5):  # the agent crashes at each start: the fourth start finds the old file back
        noted = PendingMarker.note_start(tmp_path)
        assert noted is not None and recover_before_start(noted, tmp_path) == (start == 4)
    assert (tmp_path / "flexedge.toml").read_bytes() == before
    assert "9.5" in (tmp_path / "flexedge.toml.rejected").read_text()
    left = PendingMarker.load(tmp_path)
    assert left is not None and "started 3 times" in left.state["rolled_back"]


def test_the_log_file_since_a_time_with_its_rotated_files(tmp_path: Path) -> None:
    from device.commands.logs import file_text

    def line(minute: int, text: str) -> str:
        return json.dumps({"ts": f"2026-01-01T10:{minute:02d}:00.000Z", "msg": text}) + "\n"
    path = tmp_path / "agent.log"
    (tmp_path / "agent.log.2").write_text(line(1, "old") + line(2, "older boot"))
    (tmp_path / "agent.log.1").write_text(line(5, "wanted") + "Traceback: a line without a time\n")
    path.write_text(line(7, "newest"))
    since = datetime(2026, 1, 1, 10, 4, tzinfo=timezone.utc)
    found = file_text(path, since, 1 << 20)
    assert found is not None and found.lines == 3
    assert [json.loads(t)["msg"] if t.startswith("{") else t for t in found.text.decode().splitlines()] == [
        "wanted", "Traceback: a line without a time", "newest"]
    newest = file_text(path, since, len(line(7, "newest")))  # the byte cap keeps the newest lines
    assert newest is not None and newest.lines == 1


def test_a_marker_for_a_change_never_made_is_answered_not_applied(tmp_path: Path, store: EventStore) -> None:
    """Stopped between the marker and the rename: the next start says so instead of "applied"."""
    from device.commands.config_change import confirm

    before = _config_file(tmp_path).read_bytes()
    outcome = _set(tmp_path, store, {"sync.ack_timeout_s": 9.5})
    assert isinstance(outcome, Deferred)
    marker = PendingMarker("s1", "set_config", {}, dict(outcome.state), outcome.timeout_s, starts=1)
    answer = asyncio.run(confirm(marker, CommandContext(store, tmp_path, tmp_path / "flexedge.toml", None)))
    assert answer.status is Status.FAILED and answer.detail.startswith("not applied")
    assert (tmp_path / "flexedge.toml").read_bytes() == before
