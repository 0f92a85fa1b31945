"""Versioned migrations: applied at start, by ``flask db upgrade``, and once under a race."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from datetime import timedelta

import pytest
from playhouse.migrations import Runner

from apikeys import crypto, db, scopes, service
from apikeys.errors import NameTaken
from apikeys.models import ApiKey, Organization, utcnow
from apikeys.verification import verify
from app import create_app
from tests.concurrency import run_concurrently
from tests.conftest import prepared

pytestmark = pytest.mark.both_databases

MIGRATIONS = sorted(path.stem for path in db.MIGRATIONS.glob("[0-9]*.py"))
#: The schema of the last release: a database it made must upgrade to this one's head.
PREVIOUS_RELEASE = "0002_readiness_probe"


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


def _insert_key(organization_id: str, name: str, granted, **times) -> str:
    """A key written as the previous release wrote one (its columns alone); its secret."""
    secret, now = crypto.generate_secret(), utcnow()
    row = {
        "id": crypto.new_id("key"),
        "organization_id": organization_id,
        "name": name,
        "key_hash": crypto.hash_secret(secret),
        "key_hint": crypto.hint(secret),
        "scopes": scopes.serialize(granted),
        "created_at": now - timedelta(days=30),
        "expires_at": None,
        "last_used_at": None,
        "revoked_at": None,
        **{column: now + offset for column, offset in times.items()},
    }
    columns = ", ".join(row)
    marks = ", ".join([db.database.param] * len(row))
    db.database.execute_sql(
        f"INSERT INTO api_key ({columns}) VALUES ({marks})", tuple(row.values())
    )
    return secret


def test_a_database_of_the_previous_release_upgrades_with_every_key_intact(database_url):
    db.init(database_url)
    with db.database.connection_context():
        Runner(db.database.obj, directory=str(db.MIGRATIONS)).up(target=PREVIOUS_RELEASE)
    assert _recorded(database_url)[-1] == PREVIOUS_RELEASE
    live, refused = {}, []
    old_scopes = [
        ("read:billing",),
        ("read:charge_points", "write:charge_points"),
        scopes.SCOPES[:9],
    ]
    for number in range(3):
        org = f"org_{number:020d}"
        db.database.execute_sql(
            f"INSERT INTO organization (id, name, created_at) VALUES "
            f"({db.database.param}, {db.database.param}, {db.database.param})",
            (org, f"org-{number}", utcnow()),
        )
        for index, granted in enumerate(old_scopes):
            live[_insert_key(org, f"live-{index}", granted)] = (org, granted)
        expiring = _insert_key(org, "expiring", ("read:sessions",), expires_at=timedelta(days=1))
        live[expiring] = (org, ("read:sessions",))
        used = _insert_key(org, "used", ("read:analytics",), last_used_at=timedelta(hours=-1))
        live[used] = (org, ("read:analytics",))
        # A revoked key's name is free again: a live key of the same name beside it.
        refused.append(_insert_key(org, "live-0-old", ("read:billing",), revoked_at=timedelta(-1)))
        refused.append(_insert_key(org, "gone", ("read:billing",), expires_at=timedelta(days=-1)))
    db.close_all()

    prepared(create_app({"TESTING": True, "DATABASE_URL": database_url}))

    assert _recorded(database_url) == MIGRATIONS  # every later migration, whichever they are
    for secret, (org, granted) in live.items():
        principal = verify(secret, 60)
        assert principal is not None
        assert (principal.org_id, principal.scopes) == (org, frozenset(granted))
    for secret in refused:
        assert verify(secret, 60) is None
    # Listed as before, newest first, expired keys included, revoked ones not.
    listed = service.page_of_keys("org_00000000000000000001")
    assert listed[1] == 6
    assert {key.name for key in listed[0].rows} == {
        "live-0",
        "live-1",
        "live-2",
        "expiring",
        "used",
        "gone",
    }
