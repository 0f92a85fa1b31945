"""Versioned migrations: applied at start, by ``flask db upgrade``, and once under a race."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import pytest
from playhouse.migrations import Runner

from apikeys import db
from apikeys.errors import NameTaken
from apikeys.models import ApiKey, Organization, utcnow
from app import create_app
from tests.concurrency import run_concurrently
from tests.conftest import prepared

pytestmark = pytest.mark.both_databases

MIGRATIONS = sorted(path.stem for path in db.MIGRATIONS.glob("[0-9]*.py"))


def _recorded(database_url: str) -> list[str]:
    db.init(database_url)
    return [name for (name,) in db.database.execute_sql("SELECT name FROM schema_migration")]


def _migrate(database_url: str) -> list[str]:
    db.init(database_url)
    return db.migrate()


def test_fresh_database_gets_the_schema_at_start(database_url):
    prepared(create_app({"TESTING": True, "DATABASE_URL": database_url}))

    assert {"organization", "api_key", "schema_migration"} <= set(db.database.get_tables())
    assert _recorded(database_url) == MIGRATIONS
    # The partial unique index: a live name is taken, a revoked key's name is free again.
    org = Organization.create(name="acme")
    first = ApiKey.issue(org.id, "ci", ("read:billing",))
    with pytest.raises(NameTaken):
        ApiKey.issue(org.id, "ci", ("read:billing",))
    ApiKey.revoke(org.id, first.id)
    assert ApiKey.issue(org.id, "ci", ("read:billing",)).name == "ci"


def test_migrate_applies_every_migration_once_then_nothing(database_url):
    assert _migrate(database_url) == MIGRATIONS
    assert db.migrate() == []
    assert _recorded(database_url) == MIGRATIONS


def test_db_upgrade_command_is_idempotent(app, database_url):
    runner = app.test_cli_runner()

    first = runner.invoke(args=["db", "upgrade"])
    second = runner.invoke(args=["db", "upgrade"])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    # The app applied everything at start; the command finds nothing left to do.
    assert json.loads(first.stdout) == {"applied": [], "current": MIGRATIONS}
    assert json.loads(second.stdout) == {"applied": [], "current": MIGRATIONS}
    assert _recorded(database_url) == MIGRATIONS


def test_concurrent_migrations_on_a_fresh_database_apply_once(database_url):
    outcomes = run_concurrently(_migrate, [(database_url,)] * 6)

    assert [status for status, _ in outcomes] == ["ok"] * 6, outcomes
    applied = sorted(name for _, names in outcomes for name in names)
    assert applied == MIGRATIONS  # each migration ran in exactly one process
    assert _recorded(database_url) == MIGRATIONS


def test_a_start_waits_while_another_process_writes_a_fresh_sqlite_file(tmp_path, monkeypatch):
    # Another process holds the write lock of the new file, as when it starts first: SQLite
    # refuses the switch to WAL at once, without waiting out its busy timeout (waiting
    # could deadlock). The start must wait its turn rather than fail.
    path = tmp_path / "fresh.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        waits = []

        def other_finishes(seconds):
            waits.append(seconds)
            if other.in_transaction:
                other.execute("COMMIT")

        monkeypatch.setattr(time, "sleep", other_finishes)

        assert _migrate(f"sqlite:///{path}") == MIGRATIONS

    assert waits
    assert db.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_app_starts_on_a_fresh_database_all_succeed(database_url):
    def start(url: str) -> str:
        prepared(create_app({"TESTING": True, "DATABASE_URL": url}))
        return "started"

    outcomes = run_concurrently(start, [(database_url,)] * 6)

    assert outcomes == [("ok", "started")] * 6
    assert _recorded(database_url) == MIGRATIONS


def test_a_database_made_at_0001_gains_the_readiness_probe_and_keeps_its_keys(database_url):
    db.init(database_url)
    with db.database.connection_context():
        Runner(db.database.obj, directory=str(db.MIGRATIONS)).up(target="0001_initial")
    # The columns 0001 made, and no others.
    ApiKey.insert(
        id="key_0001",
        organization=Organization.create(name="acme").id,
        name="ci",
        key_hash="0" * 64,
        key_hint="evk_...0000",
        scopes=("read:billing",),
        created_at=utcnow(),
    ).execute()
    assert _recorded(database_url) == ["0001_initial"]

    prepared(create_app({"TESTING": True, "DATABASE_URL": database_url}))

    assert _recorded(database_url) == MIGRATIONS
    assert db.readiness() == "ok"
    assert ApiKey.get_by_id("key_0001").name == "ci"
