"""The database: a proxy the models bind to, opened from ``DATABASE_URL``, and migrations."""

from __future__ import annotations

import itertools
import logging
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Flask
from peewee import Database, DatabaseProxy, OperationalError, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import parse
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

from apikeys import deadline

database = DatabaseProxy()
log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number; PostgreSQL advisory locks are keyed by a bigint.
_MIGRATION_LOCK = 0x61706B6579

_SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer, nor the writer them
    "synchronous": "normal",  # durable in WAL mode up to the last checkpoint
    "foreign_keys": 1,
}
_SCHEMES = ("sqlite", "postgres", "postgresql")


class _CommitsWithinDeadline(Database):
    """A COMMIT only while the request it writes for has not been answered without it
    (apikeys.deadline); a refused one raises, and peewee rolls the transaction back."""

    #: Whether a COMMIT that fails once sent may still have taken effect.
    uncertain_when_failed = False

    def commit(self) -> Any:
        deadline.begin_commit()
        try:
            return super().commit()
        except Exception:
            if self.uncertain_when_failed:
                deadline.commit_failed()
            raise


class _Sqlite(_CommitsWithinDeadline, SqliteDatabase):
    pass  # a COMMIT that fails is rolled back


class _PooledPostgresql(_CommitsWithinDeadline, PooledPostgresqlDatabase):
    # The server may have committed before the connection broke or it stopped answering.
    uncertain_when_failed = True


def open_database(
    url: str, pool_size: int = 32, pool_timeout: float = 10, timeout: float = 5
) -> Database:
    """A database for a ``sqlite:///path`` or ``postgresql://...`` URL.

    ``timeout`` (seconds) bounds a wait for SQLite's write lock, a PostgreSQL connect, a
    statement and a lock wait on the PostgreSQL server, and a silent peer (keepalives).
    """
    scheme, separator, _ = url.partition("://")
    if not separator or scheme not in _SCHEMES:
        raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")
    if scheme == "sqlite":
        # One connection per thread, open for the thread's life: SQLite is a file in this
        # process, so a pool would only add a check-out and a check-in to every request
        # (a fifth of the check's throughput, bench/README.md), and the server's threads
        # already bound the connections. IMMEDIATE makes every write transaction take the
        # write lock up front, so two writers queue (busy_timeout) instead of deadlocking
        # into "database is locked".
        # A thread's connection is closed by a live thread once its own has ended (_adopt).
        return _Sqlite(
            **parse(url),
            pragmas={**_SQLITE_PRAGMAS, "busy_timeout": int(timeout * 1000)},
            lock_type="IMMEDIATE",
            check_same_thread=False,
        )
    # PostgreSQL: pooled. Each request checks a connection out and back in, so a dropped
    # connection is replaced instead of failing every later request, and pool_size bounds
    # the connections to the server; pool_timeout is how long a request waits for one
    # when all are in use, before it fails with 503 service_unavailable.
    settings = parse(url)
    if not settings["database"]:
        raise ValueError("DATABASE_URL names no database: postgresql://host/name")
    settings |= {"max_connections": pool_size, "stale_timeout": 300, "timeout": pool_timeout}
    return _PooledPostgresql(**settings | _postgresql_timeouts(url, timeout))


def _postgresql_timeouts(url: str, timeout: float) -> dict[str, Any]:
    """libpq settings that bound every wait the server or the network can cause.

    A server that is stopped but whose host still answers TCP (SIGSTOP, a hung disk) is
    beyond them: a read then waits until the server resumes.
    """
    milliseconds = int(timeout * 1000)
    # The URL may carry options of its own (a search_path, say): ours are added to them.
    given = dict(parse_qsl(urlsplit(url).query)).get("options", "")
    server_side = f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}"
    return {
        "connect_timeout": max(2, round(timeout)),  # libpq's least
        "options": f"{given} {server_side}".strip(),
        # A peer that vanished (host down, network cut) ends the connection within about
        # four timeouts, instead of the kernel's two hours.
        "keepalives": 1,
        "keepalives_idle": max(1, round(timeout)),
        "keepalives_interval": max(1, round(timeout)),
        "keepalives_count": 3,
        "tcp_user_timeout": milliseconds,
    }


def init(url: str, **settings: Any) -> Database:
    """Bind the models to the database at ``url``."""
    if database.obj is not None:
        close_all()
    database.initialize(open_database(url, **settings))
    return database.obj


def close_all() -> None:
    """Close what this process holds open: the pool's connections, or this thread's."""
    if isinstance(database.obj, PooledDatabase):
        database.close_all()
    elif not database.is_closed():
        database.close()
    _close_orphans()


def discard_connection() -> None:
    """Close this thread's connection after a database error, so the next query opens a
    fresh one: a SQLite handle opened while its file was unwritable stays read-only for
    good, and a PostgreSQL connection may have been cut."""
    opened = database.obj
    if opened is None or opened.is_closed():
        return
    try:
        if isinstance(opened, PooledDatabase):
            opened.manual_close()  # not back into the pool
        else:
            opened.close()
    except Exception:  # closing a broken handle may fail too; it is dropped either way
        log.warning("could not close a failed database connection", exc_info=True)
        opened.dispose()


class _Owner:
    """Stands for one thread: only that thread holds it, in a ``threading.local``.

    When the thread ends, its thread-local storage is dropped and the weak reference to
    its owner dies without running any code: nothing of ours runs in a thread's teardown,
    which, in a server's native thread (granian's), crashes the process.
    """

    __slots__ = ("__weakref__",)


_this_thread = threading.local()
#: Every SQLite connection a thread adopted, by a serial number, with the owner's reference.
_adopted: dict[int, tuple[weakref.ref, sqlite3.Connection]] = {}
_adopting = threading.Lock()
_serials = itertools.count()


def _adopt(connection: sqlite3.Connection) -> None:
    """Make ``connection`` this thread's own, and close those of threads that have ended.

    A server that runs each request on a new thread leaves at most the connections of its
    live threads, plus those that ended since the last adoption, open.
    """
    owner = _Owner()
    # Replacing the thread's former owner (of a connection discarded after an error)
    # lets the next sweep close that one too.
    _this_thread.connection, _this_thread.owner = connection, owner
    with _adopting:
        _adopted[next(_serials)] = (weakref.ref(owner), connection)
    _close_orphans()


def _close_orphans() -> None:
    with _adopting:
        orphans = [serial for serial, (owner, _) in _adopted.items() if owner() is None]
        for serial in orphans:
            _adopted.pop(serial)[1].close()


def release_connection(_error: BaseException | None = None) -> None:
    """The end of a request (a ``teardown_request``): a pooled connection goes back to the
    pool; a thread's SQLite connection stays open for its next request, without a
    transaction that a bug left open."""
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
        _adopt(connection)


def init_app(app: Flask) -> None:
    """A request that queries opens its thread's connection (peewee connects on first
    use); a pooled one goes back to the pool at the end. /healthz and the docs never
    touch the database."""
    app.teardown_request(release_connection)


@contextmanager
def impatient(milliseconds: int) -> Iterator[None]:
    """Run the writes inside within ``milliseconds`` of lock waiting, or fail: for writes
    that matter less than the request that makes them, which must not wait behind
    another process's write lock for the whole ``DATABASE_TIMEOUT``. They are not the
    request's change: its deadline does not govern them (apikeys/deadline.py)."""
    opened = database.obj
    if isinstance(opened, PostgresqlDatabase):
        with deadline.aside(), opened.atomic():
            # The timeouts bound the statements; a COMMIT waiting for a synchronous
            # standby heeds neither, and such a write needs none (local durability is ample).
            opened.execute_sql(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true),"
                " set_config('synchronous_commit', 'local', true)",
                (f"{milliseconds}ms", f"{milliseconds * 5}ms"),
            )
            yield
        return
    patient = opened.execute_sql("PRAGMA busy_timeout").fetchone()[0]
    opened.execute_sql(f"PRAGMA busy_timeout = {int(milliseconds)}")
    try:
        yield
    finally:
        if not opened.is_closed():
            opened.execute_sql(f"PRAGMA busy_timeout = {patient}")


#: Below this much free space where the SQLite file lives, the next insert may fail:
#: not ready. (Rewriting a row can still succeed on a full disk, so the probe cannot tell.)
READY_FREE_BYTES = 1024 * 1024
#: The probe's bound on a lock wait: a write held up longer is what callers would see.
READY_PATIENCE_MS = 1000
_PROBE = "UPDATE readiness_probe SET checked_at = {0} WHERE id = 1"
_FAULTS = (
    ("read-only", ("readonly", "read-only")),
    ("full", ("disk is full", "no space left", "could not extend")),
    ("busy", ("locked", "lock timeout", "statement timeout")),
)


def readiness() -> str:
    """``ok`` when the database answers a read and commits a write now; otherwise what is
    wrong: ``down``, ``read-only``, ``full`` or ``busy`` (for readiness probes)."""
    opened = database.obj
    try:
        with opened.connection_context() if isinstance(opened, PooledDatabase) else _nothing():
            opened.execute_sql("SELECT 1 FROM readiness_probe").fetchone()
            with impatient(READY_PATIENCE_MS):
                opened.execute_sql(_PROBE.format(opened.param), (datetime.now(UTC),))
    except Exception as error:  # any failure means "not ready"; the probe reports, never raises
        discard_connection()
        fault = str(error).lower()
        status = next((name for name, signs in _FAULTS if any(s in fault for s in signs)), "down")
        log.warning("database not ready (%s): %s", status, fault.partition("\n")[0])
        return status
    if not isinstance(opened, PooledDatabase):
        free = shutil.disk_usage(Path(opened.database).parent).free
        if free < READY_FREE_BYTES:
            log.warning("database not ready: %d bytes free beside %s", free, opened.database)
            return "full"
    return "ok"


@contextmanager
def _nothing() -> Iterator[None]:
    yield


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
