"""The operator page's part of `flexedge cloud`: the `--http` options and `flexedge cloud user ...`.

    flexedge cloud --db cloud.sqlite --pki DIR --http 0.0.0.0:8443 [--http-name ops.example.org]
    flexedge cloud --db postgresql://... --photo-dir /srv/flexedge/photos --pki DIR --http 0.0.0.0:8443
    flexedge cloud user add alice --accounts cloud.sqlite.operators --role manager --station DXX1 --password-stdin

The page's own files, the operator accounts (`--accounts`) and the audit of the commands it sent
(`--command-log`, JSON lines), lie beside the SQLite database by default (`cloud.sqlite.operators`,
`cloud.sqlite.commands.jsonl`); with PostgreSQL beside the photo directory (`/srv/flexedge/photos.operators`,
`/srv/flexedge/photos.commands.jsonl`): the one local directory every cloud process of a fleet is given.

With `--pki` the page is served over TLS with a certificate issued by the fleet CA (`operator-web`, made at
the first start for the `--http` address, localhost and the `--http-name`s); `--http-plain` turns TLS off.
"""
from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import ssl
import sys
from pathlib import Path

from cloud_sync.cloud.engine import is_postgres
from cloud_sync.cloud.web.accounts import AccountError, Accounts, Role
from cloud_sync.cloud.web.server import COMMAND_LOG_SUFFIX, HttpSettings
from cloud_sync.errors import PkiError
from cloud_sync.pki import Pki

log = logging.getLogger(__name__)

WEB_IDENTITY = "operator-web"  # the CN of the page's TLS certificate in the fleet PKI
ACCOUNTS_SUFFIX = ".operators"


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", metavar="HOST:PORT", help="serve the operator page and its API here")
    parser.add_argument("--http-name", action="append", default=[], help="a host name the page answers to")
    parser.add_argument("--http-plain", action="store_true", help="the page without TLS")
    parser.add_argument("--accounts", type=Path,
                        help="operator accounts file (default: DB.operators, with PostgreSQL PHOTO_DIR.operators)")
    parser.add_argument("--command-log", type=Path, help="audit of the commands the page sent (default: "
                        f"DB{COMMAND_LOG_SUFFIX}, with PostgreSQL PHOTO_DIR{COMMAND_LOG_SUFFIX})")
    parser.add_argument("--live-interval", type=float, default=2.0, help="seconds between live view checks")


def beside_db(args: argparse.Namespace, suffix: str) -> Path | None:
    """A file of the page's named after its database: beside a SQLite file, beside the photo directory of a
    PostgreSQL one (None without --db, or with PostgreSQL and no --photo-dir)."""
    db = getattr(args, "db", None)
    if db is None:
        return None
    if is_postgres(db):
        photo_dir = getattr(args, "photo_dir", None)
        return None if photo_dir is None else Path(f"{Path(photo_dir).resolve()}{suffix}")
    return Path(f"{db}{suffix}")


def accounts_path(args: argparse.Namespace) -> Path:
    if args.accounts is not None:
        return Path(args.accounts)
    path = beside_db(args, ACCOUNTS_SUFFIX)
    if path is None:
        raise AccountError("--accounts FILE (or --db) is required")
    return path


def _tls(pki_dir: Path, host: str, names: list[str]) -> ssl.SSLContext:
    pki = Pki(pki_dir)
    issued = pki.client(WEB_IDENTITY)
    if not issued.cert_path.exists():
        hosts = sorted({host, "localhost", "127.0.0.1", *names} - {"0.0.0.0", "::", ""})
        issued = pki.issue(WEB_IDENTITY, server_names=hosts)
        log.info("issued the operator page's certificate for %s", ", ".join(hosts))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert_path, issued.key_path)
    return context


def http_settings(args: argparse.Namespace, pki_dir: Path | None) -> HttpSettings | None:
    """None without --http; raises ValueError/PkiError/AccountError for bad options."""
    if not args.http:
        return None
    host, _, port = args.http.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host not in ("0.0.0.0", "::", "localhost"):
        ipaddress.ip_address(host)  # a ValueError names a bad address
    tls = None
    if not args.http_plain:
        if pki_dir is None:
            raise PkiError("--http serves TLS with the fleet PKI: pass --pki DIR (or --http-plain)")
        tls = _tls(pki_dir, host, args.http_name)
    return HttpSettings(host, int(port), args.db, accounts_path(args), args.live_interval,
                        tuple(args.http_name), tls,
                        command_log=args.command_log or beside_db(args, COMMAND_LOG_SUFFIX))


def register_user_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = subparsers.add_parser("user", help="operator accounts of the page")
    actions = user.add_subparsers(dest="user_action", required=True)
    add = actions.add_parser("add", help="create an account or set its password and role")
    add.add_argument("name")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.OPERATOR.value)
    add.add_argument("--station", help="the station a manager sees")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    remove = actions.add_parser("remove", help="delete an account")
    remove.add_argument("name")
    listing = actions.add_parser("list", help="list accounts")
    for p in (add, remove, listing):
        p.add_argument("--accounts", type=Path, help="operator accounts file")
    user.set_defaults(func=run_user)


def run_user(args: argparse.Namespace) -> int:
    try:
        accounts = Accounts(accounts_path(args))
    except (AccountError, OSError) as exc:
        print(f"flexedge cloud user: {exc}")
        return 2
    try:
        if args.user_action == "list":
            for op in accounts.names():
                print(f"{op.name}\t{op.role.value}\t{op.station or '*'}")
            return 0
        if args.user_action == "remove":
            return 0 if accounts.remove(args.name) else 1
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
        op = accounts.add(args.name, password, Role(args.role), args.station)
        print(f"{op.name}\t{op.role.value}\t{op.station or '*'}")
        return 0
    except AccountError as exc:
        print(f"flexedge cloud user: {exc}")
        return 2
    finally:
        accounts.close()
