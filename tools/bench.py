"""`make bench`: run every bench/*.py, collect their JSON lines into bench/results.json, print a short table.

Each bench prints one JSON line per figure with a "bench" key, the figure, a raw baseline measured in the same
run where one exists, and the ratio. A bench that fails is recorded as failed (and makes the exit code 1);
the others still run.

    python tools/bench.py [--only NAME ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
RESULTS = BENCH_DIR / "results.json"
FIGURE_SUFFIXES = ("_per_s", "_ms", "_mb", "_pct", "_s", "_median")
BASELINE_MARKS = ("raw", "baseline", "pynmeagps")
TIMEOUT_S = 1800


def parse_lines(text: str) -> list[dict[str, Any]]:
    """The JSON records a bench printed; anything else on stdout is ignored."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "bench" in record:
            records.append(record)
    return records


def figure_and_baseline(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The record's headline figure and its raw baseline: named by the bench ("figure", "baseline") or else the
    first figure-like key and the first baseline-like key."""
    if "figure" in record:
        return record["figure"], record.get("baseline")
    keys = [k for k, v in record.items() if isinstance(v, (int, float)) and k.endswith(FIGURE_SUFFIXES)]
    baselines = [k for k in keys if any(mark in k for mark in BASELINE_MARKS)]
    figures = [k for k in keys if k not in baselines]
    return (figures[0] if figures else None), (baselines[0] if baselines else None)


def label(record: dict[str, Any]) -> str:
    """The bench name plus what distinguishes its lines (burst size, profile, phase...)."""
    parts = [record["bench"]]
    for key in ("instance", "burst", "profile", "counter", "stops", "phase", "compression", "events", "p99_ms",
                "cpu_pct_of_core",
                "sequence_accuracy", "false_accept_rate"):
        if key in record:
            parts.append(f"{key}={record[key]}")
    return " ".join(parts)


def table(records: list[dict[str, Any]]) -> str:
    rows = [("bench", "figure", "value", "baseline", "raw", "ratio")]
    for record in records:
        if "error" in record:
            rows.append((record["bench"], "FAILED", "", "", "", ""))
            continue
        figure, baseline = figure_and_baseline(record)
        rows.append((label(record), figure or "", str(record.get(figure, "")) if figure else "",
                     baseline or "", str(record.get(baseline, "")) if baseline else "",
                     str(next((v for k, v in record.items() if k.startswith("ratio")), ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run_bench(script: Path) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    elapsed = time.monotonic() - started
    records = parse_lines(proc.stdout)
    if proc.returncode != 0 or not records:
        tail = proc.stderr.strip().splitlines()[-5:]
        records.append({"bench": script.stem, "error": f"exit {proc.returncode}", "stderr_tail": tail})
    return records, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="bench script names (without .py)")
    parser.add_argument("--table", action="store_true", help="only print the table of the last results.json")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(RESULTS.read_text())["results"]))
        return 0
    scripts = sorted(p for p in BENCH_DIR.glob("*.py") if not args.only or p.stem in args.only)
    results: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    for script in scripts:
        print(f"== {script.name}", flush=True)
        records, elapsed = run_bench(script)
        durations[script.stem] = round(elapsed, 1)
        for record in records:
            print(json.dumps(record), flush=True)
        results.extend(records)
    RESULTS.write_text(json.dumps({
        "run_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "node": platform.node()},
        "durations_s": durations,
        "results": results,
    }, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten: {RESULTS.relative_to(REPO)}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
