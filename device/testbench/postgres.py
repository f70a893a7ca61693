"""A real PostgreSQL server run by the tests and the benches: `initdb` into a private temporary directory and
`pg_ctl` on a free loopback port, as an unprivileged user when started by root (PostgreSQL refuses to run as
root). Debian's `postgresql` package provides the programs (/usr/lib/postgresql/N/bin, not on PATH).

    with PostgresServer() as pg:
        url = pg.create_database("cloud_test")   # postgresql://flexedge@127.0.0.1:PORT/cloud_test
"""
from __future__ import annotations

import glob
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from device.testbench.procs import ProgramMissing, free_tcp_port

log = logging.getLogger(__name__)

SUPERUSER = "flexedge"  # the cluster's superuser (a role name, not a system user)
RUN_AS = "nobody"  # the system user the server runs as when root starts it
START_TIMEOUT_S = 60
MAX_CONNECTIONS = 300  # workers x pool size of the load benches, plus the tests' own
DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def pg_program(name: str) -> str:
    """The path of a PostgreSQL server program (initdb, pg_ctl, postgres) of the newest installed version."""
    found = shutil.which(name)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    if found:
        return found
    raise ProgramMissing(f"'{name}' not found: install the Debian package 'postgresql' "
                         "(apt-get install -y postgresql), or run tools/bootstrap.sh")


class PostgresServer:
    """Start/stop handle. `durable=False` (the tests) turns fsync off: the tests kill workers, never the
    machine; the benches pass `durable=True` to measure what a real deployment pays."""

    def __init__(self, *, port: int | None = None, durable: bool = False) -> None:
        self.port = port or free_tcp_port()
        self.durable = durable
        self.dir: Path | None = None
        self._user: tuple[int, int] | None = None

    @property
    def log_path(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        initdb, pg_ctl = pg_program("initdb"), pg_program("pg_ctl")
        # Its own directory under /tmp, not the caller's: pytest's temporary tree is private to root, and the
        # server's user must reach its data directory.
        self.dir = Path(tempfile.mkdtemp(prefix="flexedge-pg-"))
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            self._user = (entry.pw_uid, entry.pw_gid)
            os.chown(self.dir, *self._user)
        data = self.dir / "data"
        self._run([initdb, "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
                   "--no-sync", "--no-instructions"])
        self._start_server(pg_ctl, data)
        return self

    def _start_server(self, pg_ctl: str, data: Path) -> None:
        options = [f"-p {self.port}", f"-k {self.dir}", "-c listen_addresses=127.0.0.1",
                   f"-c max_connections={MAX_CONNECTIONS}"]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run([pg_ctl, "-D", str(data), "-l", str(self.log_path), "-w", "-t", str(START_TIMEOUT_S),
                   "-o", " ".join(options), "start"])
        log.info("postgresql listening on 127.0.0.1:%d (data in %s)", self.port, data)

    def restart(self) -> None:
        """Stop the server (fast: every client's connection is cut, committed data kept) and start it again on
        the same port and data: what clients see of a database restart."""
        assert self.dir is not None, "not started"
        pg_ctl, data = pg_program("pg_ctl"), self.dir / "data"
        self._run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
        self._start_server(pg_ctl, data)

    def _run(self, argv: list[str]) -> None:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs = {"user": self._user[0], "group": self._user[1], "extra_groups": []}
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.dir, check=False, **kwargs)
        if done.returncode != 0:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr[-2000:]} {tail}")

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg  # the `pg` extra

        if not DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    @property
    def running(self) -> bool:
        return self.dir is not None and (self.dir / "data" / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.running:
            # immediate: the data directory is deleted next, nothing needs a clean shutdown
            self._run([pg_program("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
