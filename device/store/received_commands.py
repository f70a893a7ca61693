"""Commands received from the cloud, kept with their body from the moment their id is marked seen (in the same
transaction) until their result is committed, so a start after a crash (a kill, a power cut) can answer a command
that was seen but never answered (device/commands: `CommandExecutor.interrupted`). Plain functions on the store's
connection; EventStore runs them through its one writer.

The seen set itself stays where the release before this one keeps it (a JSON document in `block_state` under the
link's key: command id -> expiry), so a rollback to that release still refuses replays; the table beside it is an
addition that release never reads (device/store/migrations.py).
"""
from __future__ import annotations

import json
from typing import Any, NamedTuple

import sqlite_utils

TABLE = "received_commands"


class ReceivedCommand(NamedTuple):
    id: str
    name: str
    args: dict[str, Any]
    expires_at: float  # epoch s
    received_at: float  # epoch s, the device's clock


def receive(db: sqlite_utils.Database, seen_key: str, command: ReceivedCommand) -> bool:
    """In one transaction: False for an id already in the seen set; else the id joins the set (ids expired by the
    command's arrival leave it, and their rows) and the command is kept with its body. True: run it."""
    with db.atomic():
        row = db.conn.execute("SELECT value FROM block_state WHERE key = ?", [seen_key]).fetchone()
        seen: dict[str, float] = json.loads(row[0]) if row else {}
        if command.id in seen:
            return False
        # Expired ids can go: an expired command is refused on its expiry alone.
        seen = {cid: exp for cid, exp in seen.items() if exp > command.received_at}
        seen[command.id] = command.expires_at
        db.conn.execute("INSERT OR REPLACE INTO block_state (key, value) VALUES (?, ?)", [seen_key, json.dumps(seen)])
        db.conn.execute(f"DELETE FROM {TABLE} WHERE expires_at <= ?", [command.received_at])
        db.conn.execute(f"INSERT OR REPLACE INTO {TABLE} (id, name, args, expires_at, received_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [command.id, command.name, json.dumps(command.args, sort_keys=True), command.expires_at,
                         command.received_at])
        return True


def forget(db: sqlite_utils.Database, command_id: str) -> None:
    """The command's result is committed: it needs no keeping (its id stays in the seen set until it expires)."""
    with db.atomic():
        db.conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", [command_id])


def received(db: sqlite_utils.Database) -> list[ReceivedCommand]:
    """Every kept command, in the order they arrived."""
    rows = db.conn.execute(f"SELECT id, name, args, expires_at, received_at FROM {TABLE} "
                           "ORDER BY received_at, rowid").fetchall()
    return [ReceivedCommand(cid, name, json.loads(args), expires_at, received_at)
            for cid, name, args, expires_at, received_at in rows]
