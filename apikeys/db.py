"""The database: a proxy the models bind to, opened from ``DATABASE_URL``, and migrations."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path

from flask import Flask
from peewee import Database, DatabaseProxy, OperationalError, PostgresqlDatabase
from playhouse.db_url import connect
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase

database = DatabaseProxy()
log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number; PostgreSQL advisory locks are keyed by a bigint.
_MIGRATION_LOCK = 0x61706B6579

_SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, nor the writer them
    "synchronous": "normal",  # durable in WAL mode up to the last checkpoint
    "foreign_keys": 1,
    # A writer waits up to 10 s for the write lock before "database is locked".
    "busy_timeout": 10_000,
}
_SCHEMES = ("sqlite", "postgres", "postgresql")


def open_database(url: str, pool_size: int = 32, pool_timeout: float = 10) -> Database:
    """A database for a ``sqlite:///path`` or ``postgresql://...`` URL."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _SCHEMES:
        raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")
    if scheme == "sqlite":
        # One connection per thread, open for the thread's life: SQLite is a file in this
        # process, so a pool would only add a check-out and a check-in to every request
        # (a fifth of the check's throughput, bench/README.md), and the server's threads
        # already bound the connections. IMMEDIATE makes every write transaction take the
        # write lock up front, so two writers queue (busy_timeout) instead of deadlocking
        # into "database is locked".
        # A thread's connection is closed by whichever thread sees it end (_ThreadLife).
        return connect(
            f"sqlite://{rest}",
            pragmas=_SQLITE_PRAGMAS,
            lock_type="IMMEDIATE",
            check_same_thread=False,
        )
    # PostgreSQL: pooled. Each request checks a connection out and back in, so a dropped
    # connection is replaced instead of failing every later request, and pool_size bounds
    # the connections to the server; pool_timeout is how long a request waits for one
    # when all are in use, before it fails with 503 service_unavailable.
    return connect(
        f"postgresql+pool://{rest}",
        max_connections=pool_size,
        stale_timeout=300,
        timeout=pool_timeout,
    )


def init(url: str, **pool: float) -> Database:
    """Bind the models to the database at ``url``."""
    if database.obj is not None:
        close_all()
    database.initialize(open_database(url, **pool))
    return database.obj


def close_all() -> None:
    """Close what this process holds open: the pool's connections, or this thread's."""
    if isinstance(database.obj, PooledDatabase):
        database.close_all()
    elif not database.is_closed():
        database.close()


class _ThreadLife:
    """Lives exactly as long as the thread that holds it: its finalizer closes the
    thread's SQLite connection, which sqlite3's statement cache keeps in a reference
    cycle that only the garbage collector would otherwise break. A server that runs each
    request on a new thread would pile connections up until then."""


_this_thread = threading.local()


def _return_connection(_error: BaseException | None) -> None:
    opened = database.obj  # once: every attribute of the proxy is a lookup in Python
    if opened.is_closed():
        return
    if isinstance(opened, PooledDatabase):
        opened.close()
        return
    connection = opened.connection()
    if connection.in_transaction:
        # Only a bug gets here; rolled back, it cannot hold the write lock for good.
        log.error("a request left a transaction open; rolled back")
        connection.rollback()
    if getattr(_this_thread, "connection", None) is not connection:
        life = _ThreadLife()
        # Not at exit: the thread may still be using the connection then, and nothing
        # committed needs a close to last.
        weakref.finalize(life, connection.close).atexit = False
        _this_thread.connection, _this_thread.life = connection, life


def init_app(app: Flask) -> None:
    """A request that queries opens its thread's connection (peewee connects on first
    use); a pooled one goes back to the pool at the end. /healthz and the docs never
    touch the database."""
    app.teardown_request(_return_connection)


def reachable() -> bool:
    """Whether the database answers a query now (for readiness probes)."""
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except Exception:  # any failure means "not ready"; the probe reports, never raises
        log.warning("database unreachable", exc_info=True)
        return False
    return True


def _connect_at_start(patience: float = 10) -> None:
    """Connect, even while another process is turning a new SQLite file to WAL.

    SQLite answers the loser of that race "database is locked" at once, without waiting
    out its busy timeout (waiting could deadlock), so the retry is ours to make.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            database.connect(reuse_if_open=True)
            return
        except OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _runner() -> Runner:
    return Runner(database.obj, directory=str(MIGRATIONS))


def applied_migrations() -> list[str]:
    """The names of the migrations the database has, in order."""
    with database.connection_context():
        return sorted(_runner().applied())


def migrate() -> list[str]:
    """Apply pending migrations; safe when several processes start at once."""
    runner = _runner()
    _connect_at_start()
    with database.connection_context(), database.atomic():
        # SQLite's IMMEDIATE transaction already excludes other writers; PostgreSQL
        # needs an explicit lock, released with the transaction.
        if isinstance(database.obj, PostgresqlDatabase):
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        return runner.up()
