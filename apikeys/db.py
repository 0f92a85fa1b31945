"""The database: a proxy the models bind to, opened from ``DATABASE_URL``, and migrations."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from peewee import Database, DatabaseProxy, PostgresqlDatabase
from playhouse.db_url import connect
from playhouse.migrations import Runner

database = DatabaseProxy()

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number; PostgreSQL advisory locks are keyed by a bigint.
_MIGRATION_LOCK = 0x61706B6579

_SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, nor the writer them
    "synchronous": "normal",  # durable in WAL mode up to the last checkpoint
    "foreign_keys": 1,
}
# Pooled for both engines: each request checks a connection out and back in, so a
# dropped PostgreSQL connection is replaced instead of failing every later request.
_POOLED = {"sqlite": "sqlite+pool", "postgres": "postgresql+pool", "postgresql": "postgresql+pool"}


def open_database(url: str) -> Database:
    """A database for a ``sqlite:///path`` or ``postgresql://...`` URL."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _POOLED:
        raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")
    options: dict = {"max_connections": 32, "stale_timeout": 300}
    if scheme == "sqlite":
        # timeout is SQLite's busy timeout; IMMEDIATE makes every write transaction take
        # the write lock up front, so two writers queue instead of deadlocking into
        # "database is locked".
        options |= {"pragmas": _SQLITE_PRAGMAS, "timeout": 10, "lock_type": "IMMEDIATE"}
    return connect(f"{_POOLED[scheme]}://{rest}", **options)


def init(url: str) -> Database:
    """Bind the models to the database at ``url``."""
    if database.obj is not None:
        database.close_all()
    database.initialize(open_database(url))
    return database.obj


def _borrow_connection() -> None:
    database.connect(reuse_if_open=True)


def _return_connection(_error: BaseException | None) -> None:
    if not database.is_closed():
        database.close()


def init_app(app: Flask) -> None:
    """Each request borrows a pooled connection and gives it back."""
    app.before_request(_borrow_connection)
    app.teardown_request(_return_connection)


def migrate() -> list[str]:
    """Apply pending migrations; safe when several processes start at once."""
    runner = Runner(database.obj, directory=str(MIGRATIONS))
    with database.connection_context(), database.atomic():
        # SQLite's IMMEDIATE transaction already excludes other writers; PostgreSQL
        # needs an explicit lock, released with the transaction.
        if isinstance(database.obj, PostgresqlDatabase):
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        return runner.up()
