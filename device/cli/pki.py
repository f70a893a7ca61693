"""`flexedge pki`: provision a fleet (CA, cloud signing key), the broker, the cloud and devices.

    flexedge pki init   --dir DIR
    flexedge pki broker --dir DIR [--host broker.example.com ...]
    flexedge pki device --dir DIR ID
    flexedge pki cloud  --dir DIR [--prefix cloud] [--workers 4]   (one certificate per cloud connection)
    flexedge pki mosquitto --dir DIR --fleet F --device ID=STATION ... [--cloud-prefix cloud --workers 4]
        (writes the broker's access config and the stations map, prints the TLS listener lines)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cloud_sync.errors import PkiError
from cloud_sync.pki import CLOUD_IDENTITY, CLOUD_WORKERS, Pki, cloud_client_ids, mosquitto_tls_config
from device.cli.common import Subparsers, emit


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("pki", parents=[common], help="make the fleet CA, broker and device certificates")
    actions = p.add_subparsers(dest="pki_action", required=True, metavar="ACTION")
    init = actions.add_parser("init", parents=[common], help="a new CA and cloud signing key")
    broker = actions.add_parser("broker", parents=[common], help="the broker's server certificate")
    broker.add_argument("--host", action="append", help="DNS name or IP of the broker (repeatable)")
    device = actions.add_parser("device", parents=[common], help="a client certificate, CN = device id")
    device.add_argument("id")
    cloud = actions.add_parser("cloud", parents=[common], help="certificates of a cloud process's connections")
    mosq = actions.add_parser("mosquitto", parents=[common],
                              help="write the broker's access config, print the listener lines")
    mosq.add_argument("--fleet", required=True)
    mosq.add_argument("--device", action="append", default=[], metavar="ID=STATION")
    for sub in (cloud, mosq):
        sub.add_argument("--cloud-prefix", action="append", dest="cloud_prefix", metavar="PREFIX",
                         help=f"client id prefix of a cloud process (repeatable; default {CLOUD_IDENTITY})")
        sub.add_argument("--workers", type=int, default=CLOUD_WORKERS, help="ingest workers per cloud process")
    for sub in (init, broker, device, cloud, mosq):
        sub.add_argument("--dir", type=Path, required=True, help="the PKI directory")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pki = Pki(args.dir)
    try:
        if args.pki_action == "init":
            pki.init()
            emit(args, {"ca": str(pki.ca_cert), "signing_pub": str(pki.signing_pub)},
                 f"CA {pki.ca_cert}\ncloud signing key {pki.signing_key} (public: {pki.signing_pub})")
        elif args.pki_action == "broker":
            issued = pki.issue_broker(args.host or ("localhost", "127.0.0.1"))
            emit(args, {"cert": str(issued.cert_path), "key": str(issued.key_path)}, f"broker {issued.cert_path}")
        elif args.pki_action == "device":
            issued = pki.issue(args.id)
            emit(args, {"cert": str(issued.cert_path), "key": str(issued.key_path)},
                 f"{args.id}: {issued.cert_path} {issued.key_path}")
        elif args.pki_action == "cloud":
            prefixes = args.cloud_prefix or [CLOUD_IDENTITY]
            ids = [cn for prefix in prefixes for cn in pki.issue_cloud(prefix, args.workers)]
            emit(args, {"identities": ids}, "cloud identities: " + " ".join(ids))
        else:
            stations = dict(item.split("=", 1) for item in args.device if "=" in item)
            cloud_ids = [cn for prefix in args.cloud_prefix or [CLOUD_IDENTITY]
                         for cn in cloud_client_ids(prefix, args.workers)]
            security = pki.write_broker_security(args.fleet, stations, cloud_ids)
            print(mosquitto_tls_config(pki, security))
    except PkiError as exc:
        print(f"flexedge pki: {exc}")
        return 2
    return 0
