"""The command framework over a real store: each command answers once with a committed `command.result`, a replay
does nothing, a command that finishes after a restart leaves a marker its Resume picks up."""
from __future__ import annotations

import asyncio
import json
import time
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
    Interrupted,
    PendingMarker,
    Status,
    result_event_id,
)
from device.commands.withdraw import NAME as WITHDRAW
from device.commands.withdraw import register_withdraw
from device.contract.domain import Role
from device.store import EventStore, ReceivedCommand
from device.workflow import LoadingDone, OffersReceived, PackageScanned, Phase
from device.workflow.runner import WorkflowRunner
from tests.helpers.workflow import block, drive_to

SEEN = "cloud_sync.seen_commands"  # cloud_sync.downlink.SEEN_COMMANDS_KEY

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


def test_commands_cut_off_by_a_stop_are_answered_at_the_next_start(store: EventStore, tmp_path: Path) -> None:
    """Seen (kept with its body in the store) but never answered: the next start answers each as registered."""
    now = time.time()

    def receive(cid: str, name: str, args: dict[str, Any], expires_at: float = now + 600) -> bool:
        return store.state.receive_command(SEEN, ReceivedCommand(cid, name, args, expires_at, now))
    for cid, name, args in (("r1", "echo", {"word": "again"}), ("r2", "reboot", {}), ("r3", "change", {}),
                            ("r4", "nonsense", {}), ("r5", "later", {}), ("r6", "echo", {"word": "x"})):
        assert receive(cid, name, args)
    assert receive("r7", "echo", {"word": "late"}, expires_at=now + 0.5)
    assert not receive("r1", "echo", {})  # a replay is refused, in the same transaction that keeps the others
    assert store.state.received_commands()[0] == ReceivedCommand("r1", "echo", {"word": "again"}, now + 600, now)
    assert set(store.state.get(SEEN)) == {f"r{n}" for n in range(1, 8)}  # where the previous release looks
    registry = CommandRegistry()
    registry.register("echo", echo, interrupted=Interrupted.RERUN)
    registry.register("reboot", echo, interrupted=Interrupted.DONE)
    registry.register("change", echo)  # the default: FAIL
    registry.register("later", later, resume=finish)
    earlier = CommandExecutor(registry, CommandContext(store, tmp_path, None, None), [].append)
    asyncio.run(earlier.execute(CloudCommand("r6", "echo", {"word": "x"})))  # answered before the stop
    asyncio.run(earlier.execute(CloudCommand("r5", "later", {})))  # its marker is on disk, its Resume answers it

    restarts: list[str] = []
    commands = CommandExecutor(registry, CommandContext(store, tmp_path, None, None), restarts.append)
    while time.time() <= now + 0.5:  # r7 expires before the start
        time.sleep(0.05)

    async def start() -> list[str]:
        interrupted = await commands.interrupted()
        await commands.resume_pending()
        await commands.answer_interrupted(interrupted)
        return [c.id for c in interrupted]
    assert asyncio.run(start()) == ["r1", "r2", "r3", "r4", "r5", "r7"]
    answers = {a["id"]: (a["status"], a["detail"]) for a in results(store)}
    assert answers == {"r6": ("ok", "echoed"), "r5": ("ok", "kept"),
                       "r1": ("ok", "interrupted by a restart, run again: echoed"),
                       "r2": ("ok", "restarted"),
                       "r3": ("failed", "interrupted by a restart"),
                       "r4": ("rejected", "interrupted by a restart, run again: unknown command"),
                       "r7": ("failed", "interrupted by a restart; it expired before it could run again")}
    assert commands.counters.interrupted == 5 and restarts == []
    assert store.state.received_commands() == []  # each forgotten once answered
    assert asyncio.run(commands.interrupted()) == []  # the next start has nothing to do


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


def test_withdraw_block_hands_the_workflow_its_input_and_answers_what_it_did(store: EventStore,
                                                                            tmp_path: Path) -> None:

    async def scenario() -> list[CommandOutcome | None]:
        runner = await WorkflowRunner.open(store, Role.VEHICLE)
        runner.workflow = drive_to(Phase.LOADING)
        registry = CommandRegistry()
        register_withdraw(registry, runner.apply, lambda: runner.workflow.state.withdrawn)
        commands = CommandExecutor(registry, CommandContext(store, tmp_path, None, None), [].append)
        for item in (PackageScanned("P1"), PackageScanned("P3")):
            assert (await runner.apply(item)).accepted
        outcomes = [await commands.execute(CloudCommand("w-bad", WITHDRAW, {"block": 7})),
                    await commands.execute(CloudCommand("w-extra", WITHDRAW, {"block": "B1", "why": "x"})),
                    await commands.execute(CloudCommand("w-other", WITHDRAW, {"block": "B2"})),
                    await commands.execute(CloudCommand("w-1", WITHDRAW, {"block": "B1"})),
                    await commands.execute(CloudCommand("w-1", WITHDRAW, {"block": "B1"})),  # a replay: not run
                    await commands.execute(CloudCommand("w-2", WITHDRAW, {"block": "B1"}))]  # the same block again
        assert runner.workflow.phase is Phase.IDLE
        assert (await runner.apply(OffersReceived((block("B1"),)))).accepted
        outcomes.append(await commands.execute(CloudCommand("w-3", WITHDRAW, {"block": "B7"})))  # OFFERED: no block
        assert not (await runner.apply(LoadingDone())).accepted  # the van left LOADING for good
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[4] is None
    answers = {a["id"]: a for a in results(store)}
    assert [answers[i]["status"] for i in ("w-bad", "w-extra", "w-other", "w-1", "w-2", "w-3")] == \
        ["rejected", "rejected", "rejected", "ok", "ok", "rejected"]
    assert answers["w-other"]["data"]["reason"] == "not_current_block" and "B2" in answers["w-other"]["detail"]
    assert answers["w-1"]["data"]["return_packages"] == ["P1", "P3"] and answers["w-1"]["data"]["phase"] == "loading"
    assert answers["w-2"]["detail"] == "block B1 was already withdrawn"
    assert answers["w-3"]["data"]["reason"] == "wrong_state" and answers["w-3"]["data"]["phase"] == "offered"
    withdrawn = [e for e in store.events() if e["type"] == "block.withdrawn"]
    assert len(withdrawn) == 1 and answers["w-1"]["data"]["event"] == withdrawn[0]["id"]
    assert store.verify_chain().ok
