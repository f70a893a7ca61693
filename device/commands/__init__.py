"""Remote commands: what a verified cloud command does on this unit, and the `command.result` event it answers with.

The link (cloud_sync.downlink) has already checked a command's signature, addressee, expiry and that its id was not
seen before (kept in the store, so across restarts); what reaches `CommandExecutor.execute` is a `CloudCommand`
(device/cloud_port.py: id, name, args). This package knows nothing of MQTT; the agent wires it.

The interface, all of it:

- `CommandRegistry`: name -> `Handler` (and, for a command that finishes after a restart, a `Resume`).
  `registry.register("selftest", handler)`; `registry.register("set_config", handler, resume=resume)`.
  A name that is not registered answers `rejected`, "unknown command".
- `Handler`: `async (command: CloudCommand, context: CommandContext) -> CommandOutcome | Deferred`.
  It validates its own `command.args` (a bad argument is `CommandOutcome(Status.REJECTED, why)`), never needs to
  catch: an exception becomes `failed` with its text (counted, logged).
- `CommandOutcome(status: ok|failed|rejected, detail: str, data: dict, restart: bool = False)`: committed as the
  event `command.result` {id, name, status, detail, data} through the store's normal path (hash-chained, in the
  event stream). `restart=True`: once that event is committed, the agent stops cleanly and exits with
  `RESTART_EXIT_CODE`; the unit (`Restart=always`) starts it again.
- `Deferred(detail, state: dict, timeout_s, apply=None)`: the command finishes after a restart (a new config, a
  new release). No result now: the executor writes a pending marker (`PendingMarker`, a JSON file in the data
  directory: id, name, args, state, timeout, starts), then runs `apply()` (the change itself, e.g. a rename: never
  made without a marker on disk; an OSError from it clears the marker and answers `failed`), and restarts the
  agent. At the next start the agent calls
  `CommandExecutor.resume_pending()`, which runs the registered `Resume`
  `async (marker: PendingMarker, context) -> CommandOutcome`, commits its result and removes the marker (its
  outcome may ask for another restart, e.g. after putting the previous config back). `PendingMarker.note_start()`
  counts starts before the agent is even assembled, so a change that crashes the agent at start is still seen.
- `CommandContext`: what handlers may use: the store, the data directory, the config file, the cloud port
  (online? upload a blob) and `wait_online(timeout_s)`.

Idempotent by id: the result event's id is derived from the command id (`result_event_id`), and the store's unique
event ids refuse a second one; a command whose result is already committed is not run again (`replays` counted).
"""
from device.commands.framework import (
    RESTART_EXIT_CODE,
    CommandContext,
    CommandCounters,
    CommandExecutor,
    CommandOutcome,
    CommandRegistry,
    Deferred,
    Handler,
    Resume,
    Status,
    result_event_id,
)
from device.commands.pending import PendingMarker

__all__ = ["RESTART_EXIT_CODE", "CommandContext", "CommandCounters", "CommandExecutor", "CommandOutcome",
           "CommandRegistry", "Deferred", "Handler", "PendingMarker", "Resume", "Status", "result_event_id"]
