"""The database: a proxy the models bind to, opened from ``DATABASE_URL``, and migrations."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flask import Flask
from peewee import Database, DatabaseProxy, OperationalError, PostgresqlDatabase
from playhouse.db_url import connect
from playhouse.migrations import Runner

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
# Pooled for both engines: each request checks a connection out and back in, so a
# dropped PostgreSQL connection is replaced instead of failing every later request.
_POOLED = {"sqlite": "sqlite+pool", "postgres": "postgresql+pool", "postgresql": "postgresql+pool"}


def open_database(url: str, pool_size: int = 32, pool_timeout: float = 10) -> Database:
    """A database for a ``sqlite:///path`` or ``postgresql://...`` URL."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _POOLED:
        raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")
    # pool_timeout: seconds a request waits for a free connection when all pool_size are
    # in use, before it fails with 503 service_unavailable.
    options: dict = {"max_connections": pool_size, "stale_timeout": 300, "timeout": pool_timeout}
    if scheme == "sqlite":
        # IMMEDIATE makes every write transaction take the write lock up front, so two
        # writers queue (busy_timeout) instead of deadlocking into "database is locked".
        # The pool hands a connection to one thread at a time, but not always to the
        # thread that opened it (a threaded server runs each request on a new thread).
        options |= {
            "pragmas": _SQLITE_PRAGMAS,
            "lock_type": "IMMEDIATE",
            "check_same_thread": False,
        }
    return connect(f"{_POOLED[scheme]}://{rest}", **options)


def init(url: str, **pool: float) -> Database:
    """Bind the models to the database at ``url``."""
    if database.obj is not None:
        database.close_all()
    database.initialize(open_database(url, **pool))
    return database.obj


def _return_connection(_error: BaseException | None) -> None:
    if not database.is_closed():
        database.close()


def init_app(app: Flask) -> None:
    """A request that queries borrows a pooled connection (peewee connects on first use),
    and gives it back at the end; /healthz and the docs never touch the database."""
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
