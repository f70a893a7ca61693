"""The cloud database's two engines behind one small interface: SQLite (one file, the embedded default) and
PostgreSQL (a fleet: many workers, a connection pool per process).

Queries are written once, in the SQL both engines speak (`?` parameters, `ON CONFLICT ... DO NOTHING`,
`excluded.col`); what differs is here and only here, in `Dialect`: the parameter style, JSON field access,
the two-argument maximum, row locks, the binary column type and the migration lock. Driver errors become
`CloudDbError` at this boundary.
"""
from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from cloud_sync.errors import SyncError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000  # SQLite: other workers hold the write lock for one batch at most
POOL_MAX = 4  # PostgreSQL connections per CloudDb: its worker's thread plus the page's and the dispatcher's calls
POOL_TIMEOUT_S = 30.0  # waiting for a pooled connection
CONNECT_TIMEOUT_S = 10  # the first connection at start
MIGRATION_LOCK_KEY = 0x466C6578  # pg_advisory_xact_lock key: workers starting together migrate one at a time
PG_SCHEMES = ("postgresql://", "postgres://")

Args = Sequence[Any] | Mapping[str, Any]  # `?` parameters, or `:name` ones with a mapping
NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # `:name`, not a `::type` cast


class CloudDbError(SyncError):
    pass


class Rows(Protocol):
    """What a cursor of either driver gives back after `execute`."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    blob: str  # the column type of raw bytes
    for_update: str  # appended to a SELECT that locks its rows until the transaction ends
    without_rowid: str  # a table option SQLite has and PostgreSQL does not need
    # A statement taking a lock on a text key until the transaction ends ('' where every write transaction is
    # serialised anyway, as SQLite's BEGIN IMMEDIATE is)
    key_lock: str
    migration_lock: str  # taken before migrating ('' where BEGIN IMMEDIATE already serialises)

    def sql(self, query: str) -> str:
        """`?` and `:name` parameters in the driver's style (psycopg: `%s` and `%(name)s`, with a literal `%`
        doubled)."""
        if self.name == "sqlite":
            return query
        return NAMED.sub(r"%(\1)s", query.replace("%", "%%").replace("?", "%s"))

    def json_text(self, column: str, *keys: str) -> str:
        """The text of a field inside a JSON text column, e.g. json_text('body', 'data', 'photo_id')."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{'.'.join(keys)}')"
        return f"({column}::jsonb #>> '{{{','.join(keys)}}}')"

    def json_flag(self, column: str, *keys: str) -> str:
        """A JSON true/false field as 1/0 (NULL when missing or of another kind on PostgreSQL)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{'.'.join(keys)}')"
        return f"(CASE {self.json_text(column, *keys)} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"

    def json_type(self, column: str, *keys: str) -> str:
        """The JSON kind of a field ('object', 'array', ...; SQLite says 'integer'/'real' where PostgreSQL says
        'number', and 'true'/'false' where it says 'boolean')."""
        if self.name == "sqlite":
            return f"json_type({column}, '$.{'.'.join(keys)}')"
        return f"jsonb_typeof({column}::jsonb #> '{{{','.join(keys)}}}')"

    def json_array_length(self, column: str, *keys: str) -> str:
        """The length of an array inside a JSON text column (NULL when it is not an array on PostgreSQL)."""
        if self.name == "sqlite":
            return f"json_array_length({column}, '$.{'.'.join(keys)}')"
        value = f"({column}::jsonb #> '{{{','.join(keys)}}}')"
        return f"(CASE WHEN jsonb_typeof({value}) = 'array' THEN jsonb_array_length({value}) END)"

    def hours_between(self, start: str, end: str) -> str:
        """Hours from one ISO-8601 timestamp text to another."""
        if self.name == "sqlite":
            return f"24 * (julianday({end}) - julianday({start}))"
        return f"EXTRACT(EPOCH FROM CAST({end} AS timestamptz) - CAST({start} AS timestamptz))::float8 / 3600"

    def greatest(self, a: str, b: str) -> str:
        return f"MAX({a}, {b})" if self.name == "sqlite" else f"GREATEST({a}, {b})"


SQLITE = Dialect("sqlite", blob="BLOB", for_update="", without_rowid="WITHOUT ROWID", key_lock="", migration_lock="")
POSTGRES = Dialect("postgresql", blob="BYTEA", for_update=" FOR UPDATE", without_rowid="",
                   key_lock="SELECT pg_advisory_xact_lock(hashtextextended(?, 0))",
                   migration_lock=f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")


class Tx:
    """One open transaction: `execute` with `?` parameters."""

    def __init__(self, conn: Any, dialect: Dialect, pipeline: Any = None) -> None:
        self._conn = conn
        self.dialect = dialect
        self._pipeline = pipeline

    def execute(self, query: str, args: Args = ()) -> Rows:
        cur: Rows = self._conn.execute(self.dialect.sql(query), _params(args))
        return cur if self._pipeline is None else _PipelinedRows(cur, self._pipeline)


class _PipelinedRows:
    """A statement sent in pipeline mode: its result is read when it is first needed. psycopg's fetches wait
    for it themselves; `rowcount` does not, so it syncs the pipeline first."""

    def __init__(self, cur: Any, pipeline: Any) -> None:
        self._cur = cur
        self._pipeline = pipeline

    @property
    def rowcount(self) -> int:
        self._pipeline.sync()
        return int(self._cur.rowcount)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        rows: list[Any] = self._cur.fetchall()
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur)


class Engine(Protocol):
    dialect: Dialect
    target: str  # what it was opened on, for messages (a URL's password is not in it)

    def transaction(self, pipelined: bool = False) -> AbstractContextManager[Tx]:
        """Committed on leaving, rolled back on an exception. `pipelined`: statements whose results are not
        read go without waiting for them (PostgreSQL's pipeline mode: a batch of a group commit costs the round
        trips of the results it reads, not one per statement); an error may then surface at a later statement
        of the transaction. SQLite has no round trips: the flag changes nothing there."""
        ...

    def read(self, query: str, args: Args = ()) -> list[tuple[Any, ...]]: ...

    def close(self) -> None: ...


def is_postgres(target: Path | str) -> bool:
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def open_engine(target: Path | str) -> Engine:
    """A PostgreSQL URL opens a pool; anything else is a SQLite file."""
    if is_postgres(target):
        return PostgresEngine(str(target))
    return SqliteEngine(Path(target))


def _enable_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Switching a new file to WAL takes an exclusive lock without calling the busy handler: two workers
    opening a fresh database together get "database is locked" at once. So the switch is retried here."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteEngine:
    """One connection per engine; several processes may share the file: every write transaction is
    `BEGIN IMMEDIATE`, so SQLite serialises them. Threads of one process share the connection under a lock."""

    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.target = str(path)
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                        timeout=BUSY_TIMEOUT_MS / 1000)
            _enable_wal(self.conn, BUSY_TIMEOUT_MS / 1000)
            self.conn.execute("PRAGMA synchronous=FULL")  # an ack promises the events are on disk
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise CloudDbError(f"cannot open cloud database {path}: {exc}") from exc
        self.lock = threading.Lock()

    @contextmanager
    def transaction(self, pipelined: bool = False) -> Iterator[Tx]:
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise CloudDbError(f"cannot begin a transaction: {exc}") from exc
            try:
                yield Tx(self.conn, self.dialect)
            except BaseException as exc:
                self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise CloudDbError(f"{type(exc).__name__}: {exc}") from exc
                raise
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK")
                raise CloudDbError(f"commit failed: {exc}") from exc

    def read(self, query: str, args: Args = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self.conn.execute(query, _params(args)).fetchall()
            except sqlite3.Error as exc:
                raise CloudDbError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        # Under the lock: a worker thread may still be inside an ingest (its task was cancelled, the thread
        # was not); closing the connection under it crashes the sqlite3 module.
        with self.lock:
            self.conn.close()


class PostgresEngine:
    """A psycopg connection pool; each transaction takes a connection of its own, so the threads of one
    process write in parallel. Transactions run at READ COMMITTED: what must be serialised (one device's
    chain head, one block's claim) is serialised by row locks (`Dialect.for_update`).

    A connection is checked when it is taken (psycopg_pool's `check`: one empty query, a round trip per
    transaction): after a server restart or a terminated backend, a dead connection is found there, counted in
    `dead_connections`, logged, and replaced, and the transaction runs on a live one instead of failing. A
    backend lost in the middle of a transaction still fails that transaction (a `CloudDbError`: the caller's
    retry or the device's resend)."""

    dialect = POSTGRES

    def __init__(self, url: str, read_only: bool = False) -> None:
        """`read_only`: every transaction of the pool's connections is READ ONLY (the operator page's)."""
        import psycopg  # the `pg` extra: only a PostgreSQL cloud needs it
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._errors: tuple[type[BaseException], ...] = (psycopg.Error, PoolTimeout)
        self.target = _redacted(url)
        try:
            # One plain connection first: an unreachable server or a refused login ends here with its own
            # message, not as a pool still retrying when its timeout runs out.
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            options = {"options": "-c default_transaction_read_only=on"} if read_only else {}
            self.pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX, timeout=POOL_TIMEOUT_S, open=False,
                                       name="flexedge-cloud", kwargs=options, check=self._check)
            self.pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except self._errors as exc:
            raise CloudDbError(f"cannot open cloud database {self.target}: {exc}") from exc

    def _check(self, conn: Any) -> None:
        """The pool's check of a connection it is about to hand out; raising makes it discard that one and take
        another. One dead connection is seldom alone (a restart kills them all): the idle ones are checked too."""
        from psycopg_pool import ConnectionPool

        try:
            ConnectionPool.check_connection(conn)
        except Exception as exc:
            log.warning("cloud database %s: a pooled connection was dead when taken (%s: %.200s); replacing it "
                        "and checking the idle ones", self.target, type(exc).__name__, str(exc).strip())
            self.pool.check()
            raise

    @contextmanager
    def transaction(self, pipelined: bool = False) -> Iterator[Tx]:
        try:
            with self.pool.connection() as conn:
                if not pipelined:
                    with conn.transaction():
                        yield Tx(conn, self.dialect)
                    return
                with conn.pipeline() as pipeline, conn.transaction():
                    yield Tx(conn, self.dialect, pipeline)
        except self._errors as exc:
            raise CloudDbError(f"{type(exc).__name__}: {exc}") from exc

    def read(self, query: str, args: Args = ()) -> list[tuple[Any, ...]]:
        try:
            with self.pool.connection() as conn:
                rows: list[tuple[Any, ...]] = conn.execute(self.dialect.sql(query), _params(args)).fetchall()
                return rows
        except self._errors as exc:
            raise CloudDbError(f"{type(exc).__name__}: {exc}") from exc

    @property
    def dead_connections(self) -> int:
        """Pooled connections found dead (when taken, or checked beside one that was) and replaced."""
        return int(self.pool.get_stats().get("connections_lost", 0))

    def close(self) -> None:
        self.pool.close()


def _params(args: Args) -> tuple[Any, ...] | Mapping[str, Any]:
    return args if isinstance(args, Mapping) else tuple(args)


def _redacted(url: str) -> str:
    """The URL without a password (postgresql://user:secret@host/db -> postgresql://user@host/db)."""
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}://{creds.partition(':')[0]}@{host}" if at else url
