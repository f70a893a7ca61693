"""`flexedge check-photo` (the house-number check) and `flexedge decode` (barcodes in a photo)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from device.cli.common import Subparsers, emit, load_context
from device.vision.barcodes import decode
from device.vision.check import HouseNumberChecker, checker_from_config
from device.vision.errors import ExpectedNumberError, ImageError, ModelError

log = logging.getLogger(__name__)

EXIT_BAD_INPUT = 3  # the photo or the expected number is unusable
EXIT_MODEL = 4  # the model or interpreter is missing or broken


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("check-photo", parents=[common],
                              help="does the photo show the expected house number? match | mismatch | unreadable")
    p.add_argument("image", nargs="?", help="photo file (JPEG, PNG)")
    p.add_argument("--expect", metavar="NUMBER", help="the stop's house number, e.g. 12A")
    p.add_argument("--batch", metavar="LIST", type=Path,
                   help="TSV of `image<TAB>expected` per line (paths relative to the list); one JSON line each")
    p.set_defaults(func=run_check)
    d = subparsers.add_parser("decode", parents=[common], help="barcodes in a photo (zbar, then zxing-cpp)")
    d.add_argument("image", help="photo file")
    d.set_defaults(func=run_decode)


def _fail(args: argparse.Namespace, code: int, error: str, message: str) -> int:
    log.warning("rejected: %s", message)
    if args.json:
        print(json.dumps({"error": error, "message": message}))
    print(f"flexedge: {message}", file=sys.stderr)
    return code


def run_check(args: argparse.Namespace) -> int:
    if bool(args.batch) == bool(args.image):
        print("flexedge check-photo: give IMAGE --expect NUMBER, or --batch LIST", file=sys.stderr)
        return 2
    if args.image and not args.expect:
        print("flexedge check-photo: --expect NUMBER is required with IMAGE", file=sys.stderr)
        return 2
    ctx = load_context(args)
    try:
        checker = checker_from_config(ctx.config.vision)
    except ModelError as exc:
        return _fail(args, EXIT_MODEL, "model", str(exc))
    if args.batch:
        return _run_batch(args, checker)
    try:
        result = checker.check(args.image, args.expect)
    except ImageError as exc:
        return _fail(args, EXIT_BAD_INPUT, exc.reason, str(exc))
    except ExpectedNumberError as exc:
        return _fail(args, EXIT_BAD_INPUT, "bad_expected", str(exc))
    doc = result.to_dict()
    quality = result.quality
    retake = f"  retake: {', '.join(str(r) for r in quality.reasons)}" if quality and not quality.ok else ""
    emit(args, doc, f"{result.verdict}  read={result.read or '-'}  confidence={result.confidence:.2f}  "
                    f"{result.ms:.0f} ms{retake}")
    return 0


def _run_batch(args: argparse.Namespace, checker: HouseNumberChecker) -> int:
    try:
        lines = args.batch.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(args, EXIT_BAD_INPUT, "bad_list", f"cannot read {args.batch}: {exc}")
    errors = 0
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            errors += 1
            print(json.dumps({"line": number, "error": "bad_line", "message": "expected `image<TAB>number`"}))
            continue
        path, expected = (args.batch.parent / parts[0].strip()), parts[1].strip()
        doc: dict[str, object] = {"path": str(path), "expected": expected}
        try:
            doc.update(checker.check(path, expected).to_dict())
        except ImageError as exc:
            errors += 1
            doc.update(error=exc.reason, message=str(exc))
        except ExpectedNumberError as exc:
            errors += 1
            doc.update(error="bad_expected", message=str(exc))
        print(json.dumps(doc), flush=True)
    return 1 if errors else 0


def run_decode(args: argparse.Namespace) -> int:
    ctx = load_context(args)
    try:
        codes = decode(args.image, max_megapixels=ctx.config.vision.max_megapixels)
    except ImageError as exc:
        return _fail(args, EXIT_BAD_INPUT, exc.reason, str(exc))
    docs = [c.to_dict() for c in codes]
    if args.json:
        print(json.dumps(docs))
    else:
        print("\n".join(f"{c.symbology}: {c.data}" for c in codes) if codes else "no barcode found")
    return 0
