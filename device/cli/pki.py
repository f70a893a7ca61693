"""`flexedge pki`: provision a fleet (CA, cloud signing key), the broker, the cloud and devices.

    flexedge pki init   --dir DIR
    flexedge pki broker --dir DIR [--host broker.example.com ...]
    flexedge pki device --dir DIR ID [--force]
    flexedge pki cloud  --dir DIR [--cloud-prefix cloud] [--workers 4]   (one certificate per cloud connection)
    flexedge pki renew  --dir DIR ID              a new certificate for the same key (a device, cloud or broker)
    flexedge pki revoke --dir DIR ID              into the CRL; then `pki mosquitto` again and restart mosquitto
    flexedge pki mosquitto --dir DIR --fleet F --device ID=STATION ... [--cloud-prefix cloud --workers 4]
                           [--conf-dir /etc/mosquitto] [--port 8883]
        (installs the broker's drop-in, its files and access config; writes the stations map)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cloud_sync.errors import PkiError
from cloud_sync.pki import CLOUD_IDENTITY, CLOUD_WORKERS, Pki, cloud_identities
from device.cli.common import CliError, Exit, Subparsers, emit, subcommand_options


def register(subparsers: Subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("pki", parents=[common], help="make the fleet CA, broker and device certificates")
    actions = p.add_subparsers(dest="pki_action", required=True, metavar="ACTION")
    # The common options may come before or after the action (`pki --json init`, `pki init --json`).
    late = subcommand_options()
    init = actions.add_parser("init", parents=[late], help="a new CA and cloud signing key")
    broker = actions.add_parser("broker", parents=[late], help="the broker's server certificate")
    broker.add_argument("--host", action="append", help="DNS name or IP of the broker (repeatable)")
    broker.add_argument("--force", action="store_true", help="replace an existing broker key and certificate")
    device = actions.add_parser("device", parents=[late], help="a client certificate, CN = device id")
    device.add_argument("id")
    device.add_argument("--force", action="store_true", help="replace an existing key and certificate")
    cloud = actions.add_parser("cloud", parents=[late], help="certificates of a cloud process's connections")
    renew = actions.add_parser("renew", parents=[late], help="a new certificate for an existing key")
    renew.add_argument("id")
    revoke = actions.add_parser("revoke", parents=[late], help="revoke a certificate (writes the CRL)")
    revoke.add_argument("id")
    mosq = actions.add_parser("mosquitto", parents=[late],
                              help="install the broker's TLS listener drop-in, its files and access config")
    mosq.add_argument("--fleet", required=True)
    mosq.add_argument("--device", action="append", default=[], metavar="ID=STATION")
    mosq.add_argument("--conf-dir", type=Path, default=Path("/etc/mosquitto"),
                      help="mosquitto's configuration directory (default /etc/mosquitto)")
    mosq.add_argument("--port", type=int, default=8883, help="the TLS listener's port (default 8883)")
    mosq.add_argument("--bind", default=None, help="listen on this address only (default: all)")
    mosq.add_argument("--user", default="mosquitto", help="the user mosquitto runs as (default mosquitto)")
    for sub in (cloud, mosq):
        sub.add_argument("--cloud-prefix", action="append", dest="cloud_prefix", metavar="PREFIX",
                         help=f"client id prefix of a cloud process (repeatable; default {CLOUD_IDENTITY})")
        sub.add_argument("--workers", type=int, default=CLOUD_WORKERS, help="ingest workers per cloud process")
    for sub in (init, broker, device, cloud, renew, revoke, mosq):
        sub.add_argument("--dir", type=Path, required=True, help="the PKI directory")
        sub.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    pki = Pki(args.dir)
    try:
        if args.pki_action == "init":
            pki.init()
            pki.write_crl()
            emit(args, {"ca": str(pki.ca_cert), "signing_pub": str(pki.signing_pub), "crl": str(pki.crl)},
                 f"CA {pki.ca_cert}\ncloud signing key {pki.signing_key} (public: {pki.signing_pub})")
        elif args.pki_action == "broker":
            issued = pki.issue_broker(args.host or ("localhost", "127.0.0.1"), replace=args.force)
            emit(args, {"cert": str(issued.cert_path), "key": str(issued.key_path)}, f"broker {issued.cert_path}")
        elif args.pki_action == "device":
            issued = pki.issue(args.id, replace=args.force)
            emit(args, {"cert": str(issued.cert_path), "key": str(issued.key_path)},
                 f"{args.id}: {issued.cert_path} {issued.key_path}")
        elif args.pki_action == "cloud":
            prefixes = args.cloud_prefix or [CLOUD_IDENTITY]
            ids = [cn for prefix in prefixes for cn in pki.issue_cloud(prefix, args.workers)]
            emit(args, {"identities": ids}, "cloud identities: " + " ".join(ids))
        elif args.pki_action == "renew":
            issued = pki.renew(args.id)
            emit(args, {"cert": str(issued.cert_path), "key": str(issued.key_path)},
                 f"{args.id}: renewed {issued.cert_path} (same key {issued.key_path}); copy the .crt to the unit")
        elif args.pki_action == "revoke":
            serial = pki.revoke(args.id)
            emit(args, {"serial": serial, "crl": str(pki.crl)},
                 f"{args.id}: serial {serial:x} revoked in {pki.crl}; run `flexedge pki mosquitto` again and "
                 "restart mosquitto")
        else:
            return _mosquitto(args, pki)
    except PkiError as exc:
        raise CliError(str(exc)) from None
    return Exit.OK


def _mosquitto(args: argparse.Namespace, pki: Pki) -> int:
    from cloud_sync.mosquitto_setup import install_broker_files

    stations = {}
    for item in args.device:
        device, sep, station = item.partition("=")
        if not sep:
            raise CliError(f"--device {item!r}: expected ID=STATION")
        stations[device] = station
    prefixes = args.cloud_prefix or [CLOUD_IDENTITY]
    cloud_ids = [cn for prefix in prefixes for cn in cloud_identities(prefix, args.workers)]
    files = install_broker_files(pki, args.fleet, stations, cloud_ids, conf_dir=args.conf_dir, port=args.port,
                                 bind=args.bind, user=args.user)
    emit(args, {"drop_in": str(files.drop_in), "directory": str(files.directory), "access": str(files.access)},
         f"wrote {files.drop_in} and {files.directory}/ (CA, broker certificate and key, CRL, access config)\n"
         "then: systemctl restart mosquitto")
    return Exit.OK
