"""`make chaos`: every fault scenario against real processes, one line each, and the speeds measured on the way
(bench figures, each against its reference); exit 1 if any scenario failed or a figure is below its reference.

    python tools/chaos.py [--short] [--only NAME ...] [--seed N]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.chaos.catalog import ALL_SCENARIOS, run  # noqa: E402
from tests.helpers.chaos.scenarios import FULL, SHORT, make_fleet  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer rounds and events (what `make test` runs)")
    parser.add_argument("--only", nargs="+", choices=sorted(ALL_SCENARIOS), help="run only these scenarios")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--log", default="/tmp/flexedge-chaos.log", help="the in-process cloud's log (not stdout)")
    args = parser.parse_args()
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scale = SHORT if args.short else FULL
    failed = 0
    with tempfile.TemporaryDirectory(prefix="flexedge-chaos-pki-") as tmp:
        fleet = make_fleet(Path(tmp))
        for name in args.only or ALL_SCENARIOS:
            try:
                result = run(name, fleet, scale, args.seed)
                line, ok = result.line(), result.passed
                line += "".join(f"\n{figure.line()}" for figure in result.figures)
                ok = ok and all(figure.held for figure in result.figures)
            except Exception as exc:  # a scenario that cannot finish is a failed scenario, reported as such
                line, ok = f"{name}: failed, {type(exc).__name__}: {exc}", False
            failed += not ok
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
