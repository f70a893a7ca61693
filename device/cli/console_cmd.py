"""`flexedge console pair`: a new pairing code for the local console; `--revoke` unpairs every browser."""
from __future__ import annotations

import argparse

from device.cli.common import Subparsers, emit, load_context
from device.console.pairing import Pairing


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("console", help="the local web console (driver / dock screen)")
    sub = p.add_subparsers(dest="console_command", required=True, metavar="ACTION")
    pair = sub.add_parser("pair", parents=[common], help="print a new pairing code for a browser")
    pair.add_argument("--revoke", action="store_true", help="also unpair every paired browser")
    pair.set_defaults(func=run_pair)


def run_pair(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    ctx.require_data_dir()  # the code goes where the agent looks, never into a new directory
    pairing = Pairing.from_config(ctx.config.console, ctx.data_dir)
    revoked = pairing.revoke_all() if args.revoke else 0
    code = pairing.new_code()
    section = ctx.config.console
    doc = {"code": code, "valid_s": section.pairing_code_ttl_s, "revoked": revoked,
           "url": f"http://{section.bind}:{section.port}/"}
    human = (f"pairing code {code} (valid {section.pairing_code_ttl_s / 60:.0f} min, single use)\n"
             f"open {doc['url']} and enter it" + (f"\n{revoked} paired browsers unpaired" if revoked else ""))
    emit(args, doc, human)
    return 0
