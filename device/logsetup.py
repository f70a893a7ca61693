"""Structured logging: one JSON object per line on stderr (journald takes it from there).

Under systemd (JOURNAL_STREAM set), each line starts with its syslog priority as `<N>` (sd-daemon(3)), which
journald strips and records, so `journalctl -u flexedge -p warning` works."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Mapping

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})  # `extra=` fields
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


# logging level -> syslog priority (sd-daemon.h SD_DEBUG .. SD_CRIT)
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalPrefix(logging.Formatter):
    """Puts `<N>` before what the wrapped formatter makes."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 4)
        return f"<{priority}>{self.inner.format(record)}"


def setup_logging(level: str = "INFO", json_lines: bool = True, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (JsonFormatter() if json_lines else
                                    logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setFormatter(JournalPrefix(formatter) if env.get("JOURNAL_STREAM") else formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


LOG_FILE_BYTES = 5 * 1024 * 1024  # a log file is rotated at this size
LOG_FILE_BACKUPS = 3  # rotated files kept beside it (.1 .. .3)


def add_log_file(path: Path, json_lines: bool = True) -> None:
    """Also log to a rotated file (what `upload_logs` reads where there is no journal)."""
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS,
                                                   encoding="utf-8")
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
