"""CPU and memory of processes from /proc (Linux): what the benches report beside their figures."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    pid: int
    name: str  # the command line, shortened
    cpu_s: float  # user + system since the process started
    rss_mb: float
    peak_rss_mb: float  # VmHWM


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0  # a zombie has no memory lines


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS:")


def command_line(pid: int, limit: int = 120) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return raw[:limit]


def usage(pid: int) -> Usage:
    """OSError (FileNotFoundError, ProcessLookupError) once the process is gone."""
    return Usage(pid, command_line(pid), cpu_seconds(pid), rss_mb(pid), _status_mb(pid, "VmHWM:"))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant, parents first."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        tree.append(current)
        try:
            queue += children(current)
        except OSError:
            continue
    return tree
