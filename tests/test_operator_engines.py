"""The operator page's own reading and the command results on both cloud engines (SQLite, a real
PostgreSQL): the page's connection cannot write, a van's `command.result` is found by `flexedge cloud
command`'s wait and by the page's history, and `--http` with a PostgreSQL cloud places the page's files
beside the photo directory."""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pytest

from cloud_sync.cloud.commands import wait_result
from cloud_sync.cloud.web import cli as web_cli
from cloud_sync.cloud.web.accounts import AccountError
from cloud_sync.cloud.web.commands import AuditLog, history
from cloud_sync.cloud.web.readonly import ReadDbError, ReadOnlyDb
from cloud_sync.cloud.web.server import COMMAND_LOG_SUFFIX
from device.contract.domain import Event, EventType
from tests.helpers.cloud_target import CloudTarget
from tests.helpers.operator import ingest, known_day


def test_the_pages_connection_cannot_write(tmp_path: Path, cloud_target: CloudTarget) -> None:
    known_day(tmp_path, cloud_target)
    db = ReadOnlyDb(cloud_target.db)
    try:
        with pytest.raises(ReadDbError):
            db.rows("UPDATE blocks SET winner = NULL")
        assert db.rows("SELECT id, winner FROM blocks ORDER BY id") == [("B-A", "van-a"), ("B-B", "van-b")]
    finally:
        db.close()


def test_a_command_result_is_found_on_either_engine(tmp_path: Path, cloud_target: CloudTarget) -> None:
    known_day(tmp_path, cloud_target)
    cloud = cloud_target.open()
    try:
        ingest(cloud, tmp_path, "van-a", [Event(EventType.COMMAND_RESULT, {
            "id": "cmd-1", "name": "selftest", "status": "ok", "detail": "all good", "data": {"disk": "ok"}})])
    finally:
        cloud.close()
    result = asyncio.run(wait_result(cloud_target.db, "van-a", "cmd-1", 5.0))
    assert result is not None and (result.name, result.status, result.detail, dict(result.data)) == (
        "selftest", "ok", "all good", {"disk": "ok"})
    assert asyncio.run(wait_result(cloud_target.db, "van-a", "cmd-2", 0.0)) is None
    db = ReadOnlyDb(cloud_target.db)
    try:
        listed = history(db, AuditLog(tmp_path / "audit.jsonl"), "van-a", time.time())["commands"]
    finally:
        db.close()
    assert [(c["id"], c["status"], c["operator"]) for c in listed] == [("cmd-1", "ok", None)]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    parser.add_argument("--photo-dir", type=Path)
    web_cli.add_http_arguments(parser)
    return parser.parse_args(["--http", "127.0.0.1:0", "--http-plain", *argv])


def test_the_pages_files_lie_beside_the_database_or_the_photo_directory(tmp_path: Path) -> None:
    url = "postgresql://flexedge@127.0.0.1:5432/cloud"
    on_pg = web_cli.http_settings(_args("--db", url, "--photo-dir", str(tmp_path / "photos")), None)
    assert on_pg is not None and on_pg.db_path == url
    assert on_pg.accounts_path == tmp_path / "photos.operators"
    assert on_pg.command_log_path == Path(f"{tmp_path / 'photos'}{COMMAND_LOG_SUFFIX}")
    on_file = web_cli.http_settings(_args("--db", str(tmp_path / "cloud.db")), None)
    assert on_file is not None and on_file.command_log_path == Path(f"{tmp_path / 'cloud.db'}{COMMAND_LOG_SUFFIX}")
    chosen = web_cli.http_settings(_args("--db", url, "--accounts", str(tmp_path / "ops"), "--command-log",
                                         str(tmp_path / "audit.jsonl")), None)
    assert chosen is not None and (chosen.accounts_path, chosen.command_log_path) == (
        tmp_path / "ops", tmp_path / "audit.jsonl")
    with pytest.raises(AccountError):
        web_cli.http_settings(_args("--db", url), None)  # neither --accounts nor --photo-dir
