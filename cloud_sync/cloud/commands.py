"""Commands to one van, from the operator's side: build, sign (the fleet's signing key), publish on the van's
`cmd` topic, and wait for the van's `command.result` event to be stored by the cloud's ingest.

The result travels in the van's event stream like any other event (hash-chained, acked end to end), so "arrived"
means stored in the cloud database, not merely seen on the broker.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import aiomqtt

from cloud_sync.cloud.engine import CloudDbError, Dialect, Engine, is_postgres, open_engine
from cloud_sync.connection import BrokerSettings, make_client, release
from cloud_sync.messages import Command, encode
from cloud_sync.signing import Signer
from cloud_sync.topics import FleetTopics
from device.contract.domain import new_event_id

log = logging.getLogger(__name__)

RESULT_POLL_S = 0.25  # how often the stored events are looked at while waiting for a result
DEFAULT_TTL_S = 600.0  # a command not executed within this is refused by the van


@dataclass(frozen=True)
class CommandResult:
    """A `command.result` event as the cloud stored it."""

    device: str
    seq: int
    id: str
    name: str
    status: str  # ok | failed | rejected
    detail: str
    data: Mapping[str, Any]
    ts: str

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "seq": self.seq, "id": self.id, "name": self.name, "status": self.status,
                "detail": self.detail, "data": dict(self.data), "ts": self.ts}


def new_command(device: str, name: str, args: Mapping[str, Any], ttl_s: float = DEFAULT_TTL_S) -> Command:
    return Command(new_event_id(), device, name, dict(args), datetime.now(timezone.utc) + timedelta(seconds=ttl_s))


def signed_payload(signer: Signer, command: Command) -> bytes:
    return encode(signer.sign(command.to_body()))


def command_args(pairs: Sequence[str], json_args: str | None = None) -> dict[str, Any]:
    """`json_args` (one JSON object) then KEY=VALUE pairs (a value that parses as JSON is that value, else the
    text). Raises ValueError naming what is wrong."""
    try:
        args = json.loads(json_args) if json_args else {}
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ValueError("expected a JSON object")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"argument {pair[:80]!r}: expected KEY=VALUE")
        try:
            args[key.strip()] = json.loads(text)
        except ValueError:
            args[key.strip()] = text
    return args


async def publish(client: aiomqtt.Client, fleet: str, signer: Signer, command: Command) -> None:
    """The one way a command leaves the cloud: signed, QoS 1 on the van's `cmd` topic of a connected client,
    awaited until the broker has it; the van's persistent session keeps it while it is offline."""
    await client.publish(FleetTopics(fleet).device(command.device).cmd, signed_payload(signer, command), qos=1)


async def publish_command(broker: BrokerSettings, client_id: str, fleet: str, signer: Signer,
                          command: Command) -> None:
    """`publish` over a connection of its own (the command line's). Raises aiomqtt.MqttError when the broker
    cannot be reached."""
    client = make_client(broker, client_id, persistent=False)
    try:
        async with client:
            await publish(client, fleet, signer, command)
    finally:
        release(client)


RESULTS_SQL = ("SELECT seq, body FROM events WHERE device = ? AND type = 'command.result' "
               "ORDER BY seq DESC LIMIT ?")


def result_of(device: str, seq: int, body: str | bytes) -> CommandResult:
    """A stored `command.result` event (its row's seq and body) as a CommandResult. The event is what a van
    sent: a field of the wrong shape reads as missing, never as an error."""
    event = json.loads(body)
    data = event.get("data") if isinstance(event, dict) else None
    data = data if isinstance(data, dict) else {}
    inner = data.get("data")
    return CommandResult(device, int(seq), str(data.get("id")), str(data.get("name")), str(data.get("status")),
                         str(data.get("detail", "")), dict(inner) if isinstance(inner, dict) else {},
                         str(event.get("ts") if isinstance(event, dict) else None))


def result_sql(dialect: Dialect) -> str:
    """(seq, body) of the stored `command.result` of one command; parameters: device, command id."""
    return (f"SELECT seq, body FROM events WHERE device = ? AND type = 'command.result' "
            f"AND {dialect.json_text('body', 'data', 'id')} = ? ORDER BY seq LIMIT 1")


def stored_result(engine: Engine, device: str, command_id: str) -> CommandResult | None:
    """The stored `command.result` of this command."""
    rows = engine.read(result_sql(engine.dialect), (device, command_id))
    return result_of(device, rows[0][0], rows[0][1]) if rows else None


async def wait_result(target: Path | str, device: str, command_id: str, timeout_s: float) -> CommandResult | None:
    """The result once the cloud stored it; None after `timeout_s`. Raises CloudDbError when a PostgreSQL
    database cannot be reached; a SQLite file the cloud has not created (or migrated) yet is waited for."""
    deadline = time.monotonic() + timeout_s
    engine: Engine | None = None
    try:
        while True:
            result = None
            if engine is None and (is_postgres(target) or Path(target).is_file()):
                engine = await asyncio.to_thread(open_engine, target)
            if engine is not None:
                try:
                    result = await asyncio.to_thread(stored_result, engine, device, command_id)
                except CloudDbError as exc:  # the cloud has not created its tables yet
                    log.info("no result of %s yet: %s", command_id, exc)
            if result is not None or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(RESULT_POLL_S)
    finally:
        if engine is not None:
            engine.close()
