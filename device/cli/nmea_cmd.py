"""`flexedge nmea FILE [--json]`: decode an NMEA log into one fix per epoch, with gpsd's TPV field names."""
from __future__ import annotations

import argparse
import json
import sys

from device.cli.common import Subparsers
from device.logsetup import setup_logging
from firmware_bridge.gps.nmea_reader import NmeaFixReader, read_log


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("nmea", parents=[common], help="decode an NMEA log (one fix per epoch)")
    p.add_argument("file", help="NMEA log (raw receiver output; `#` comment lines are skipped)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level or "WARNING", True)
    reader = NmeaFixReader()
    try:
        for fix in read_log(args.file, reader):
            doc = {"class": "TPV", **fix.to_dict()}
            if args.json:
                print(json.dumps(doc))
            else:
                print(f"{doc.get('time', '-'):24s} mode {doc['mode']}  "
                      f"{doc.get('lat', float('nan')):12.7f} {doc.get('lon', float('nan')):13.7f}  "
                      f"alt {doc.get('alt', float('nan')):7.1f}  speed {doc.get('speed', float('nan')):6.2f}")
    except OSError as exc:
        print(f"flexedge nmea: {exc}", file=sys.stderr)
        return 2
    # The counters go to stderr so stdout stays one JSON line per epoch.
    print(json.dumps({"summary": reader.counters.as_dict()}), file=sys.stderr)
    return 0
