"""`upload_logs`: the agent's log since a time, gzip-compressed, uploaded as a blob through the photo chunk path.

Where from: the journal (`journalctl --unit flexedge.service`) when the agent runs under systemd and the journal
gives lines; else the log file (`[logging] file`, with its rotated files). The newest `[commands] logs_max_bytes`
of text are kept. The blob is queued in the store's upload index with the result event as the event that records
it (its id, sha256 and size are in the result's data), so it goes up after that event, chunk by chunk, resuming
after an outage, and the cloud files it beside the photos and checks its sha256 against the result.
"""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from device.cloud_port import CloudCommand
from device.commands.framework import CommandContext, CommandOutcome, Status, result_event_id
from device.config import load_config
from device.contract.domain import BLOB_ID_PREFIX, iso_utc
from device.logsetup import LOG_FILE_BACKUPS
from device.paths import log_file_path

log = logging.getLogger(__name__)

NAME = "upload_logs"
UNIT = "flexedge.service"
DEFAULT_SINCE_S = 3600.0  # without `since`: the last hour
JOURNAL_TIMEOUT_S = 60.0
BLOB_DIR = "blobs"  # in the data directory; retention removes a blob's file once the cloud has it


@dataclass(frozen=True)
class LogText:
    text: bytes
    lines: int
    source: str


def parse_since(args: dict[str, object], now: datetime) -> datetime:
    """`since`: an ISO 8601 time, or `since_s`: seconds back from now; default the last hour. ValueError."""
    if "since" in args:
        value = args["since"]
        if not isinstance(value, str):
            raise ValueError("since: expected an ISO 8601 time")
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    seconds = args.get("since_s", DEFAULT_SINCE_S)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 90 * 86400:
        raise ValueError("since_s: expected seconds, 0 < since_s <= 90 days")
    return now - timedelta(seconds=float(seconds))


def _tail(lines: list[bytes], max_bytes: int) -> LogText:
    kept: list[bytes] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) > max_bytes:
            break
        kept.append(line)
        size += len(line)
    kept.reverse()
    return LogText(b"".join(kept), len(kept), "")


def journal_text(since: datetime, max_bytes: int) -> LogText | None:
    """The unit's journal since `since`, when this process runs under systemd and journalctl gives lines."""
    if not os.environ.get("INVOCATION_ID") or shutil.which("journalctl") is None:
        return None
    try:
        done = subprocess.run(["journalctl", "--unit", UNIT, "--since", f"@{since.timestamp():.0f}",
                               "--output", "short-iso-precise", "--no-pager", "--quiet"],
                              capture_output=True, timeout=JOURNAL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("journalctl failed: %r; using the log file", exc)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        log.info("journal gave nothing (exit %d: %s); using the log file", done.returncode,
                 done.stderr.decode(errors="replace").strip()[:200])
        return None
    found = _tail(done.stdout.splitlines(keepends=True), max_bytes)
    return LogText(found.text, found.lines, "journal")


def _line_time(line: bytes) -> datetime | None:
    """The time of a log line: JSON lines carry "ts" (UTC); plain lines start with the local asctime."""
    try:
        if line.startswith(b"{"):
            return datetime.fromisoformat(str(json.loads(line)["ts"]).replace("Z", "+00:00"))
        return datetime.strptime(line[:19].decode("ascii"), "%Y-%m-%d %H:%M:%S").astimezone()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def file_text(path: Path, since: datetime, max_bytes: int) -> LogText | None:
    """The log file and its rotated files (oldest first), lines from `since` on (a line without a time, such as
    a traceback's, goes with the line before it)."""
    files = [path.with_name(f"{path.name}.{n}") for n in range(LOG_FILE_BACKUPS, 0, -1)] + [path]
    files = [f for f in files if f.exists()]
    if not files:
        return None
    lines: list[bytes] = []
    keep = False
    for file in files:
        with open(file, "rb") as fh:
            for line in fh:
                moment = _line_time(line)
                if moment is not None:
                    keep = moment >= since
                if keep:
                    lines.append(line)
    found = _tail(lines, max_bytes)
    return LogText(found.text, found.lines, str(path))


def blob_id(command_id: str) -> str:
    """The blob's id (a plain id: a topic level and a file name in the cloud), the same for a command's retries."""
    return f"{BLOB_ID_PREFIX}{uuid.uuid5(uuid.NAMESPACE_URL, command_id).hex}"


async def upload_logs(command: CloudCommand, context: CommandContext) -> CommandOutcome:
    now = datetime.now(timezone.utc)
    try:
        since = parse_since(dict(command.args), now)
    except ValueError as exc:
        return CommandOutcome(Status.REJECTED, str(exc))
    config = load_config(context.config_path, check_files=False)
    max_bytes = config.commands.logs_max_bytes
    file = log_file_path(config.logging.file, context.data_dir)
    found = await asyncio.to_thread(journal_text, since, max_bytes)
    if found is None and file is not None:
        found = await asyncio.to_thread(file_text, file, since, max_bytes)
    if found is None:
        return CommandOutcome(Status.FAILED, "no log to read: no journal for this process and no [logging] file")
    packed = gzip.compress(found.text, compresslevel=9)
    sha256 = hashlib.sha256(packed).hexdigest()
    name = blob_id(command.id)
    folder = context.data_dir / BLOB_DIR
    path = folder / f"{name}.log.gz"

    def record() -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(packed)
        store = context.store.state
        store.record_photo(name, str(path), sha256, size=len(packed), taken_at=iso_utc(now))
        store.queue_photo(name, result_event_id(command.id))  # goes up after the result that names it
    await asyncio.to_thread(record)
    if context.cloud is not None:
        context.cloud.kick()
    return CommandOutcome(Status.OK, f"{found.lines} log lines since {iso_utc(since)} from {found.source}: "
                          f"{len(found.text)} bytes, {len(packed)} gzip bytes uploading as {name}",
                          {"blob_id": name, "sha256": sha256, "size": len(packed), "raw_bytes": len(found.text),
                           "lines": found.lines, "source": found.source, "since": iso_utc(since),
                           "encoding": "gzip"})
