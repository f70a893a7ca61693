"""The command framework over a real store: each command answers once with a committed `command.result`, a replay
does nothing, a command that finishes after a restart leaves a marker its Resume picks up."""
from __future__ import annotations

import asyncio
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
