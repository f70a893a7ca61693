"""`flexedge outbox`: depth, oldest pending age, last acked seq; `--verify` checks the hash chain."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from device.cli.common import Subparsers, emit, load_context


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("outbox", parents=[common], help="outbox depth and hash-chain check")
    p.add_argument("--verify", action="store_true", help="recompute the hash chain; exit 1 if broken")
    p.add_argument("--prune", action="store_true", help="delete acked events older than the retention age")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    with ctx.open_store(create=False) as store:
        doc: dict[str, Any] = asdict(store.stats())
        if args.prune:
            doc["pruned"] = asdict(store.prune())
        if args.verify:
            doc["chain"] = asdict(store.verify_chain())
    age = doc["oldest_pending_age_s"]
    lines = [f"outbox depth      {doc['depth']}  {doc['depth_by_lane']}",
             f"oldest pending    {'-' if age is None else f'{age:.1f} s'}",
             f"last acked seq    {doc['last_acked_seq'] if doc['last_acked_seq'] is not None else '-'}",
             f"last seq          {doc['last_seq']}"]
    if "pruned" in doc:
        lines.append(f"pruned            {doc['pruned']['deleted']} events")
    if "chain" in doc:
        chain = doc["chain"]
        verdict = "ok" if chain["ok"] else f"BROKEN at seq {chain['first_bad_seq']}: {chain['reason']}"
        lines.append(f"hash chain        {verdict} ({chain['checked']} events checked)")
    emit(args, doc, "\n".join(lines))
    return 0 if "chain" not in doc or doc["chain"]["ok"] else 1
