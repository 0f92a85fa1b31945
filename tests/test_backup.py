"""The README's operations, as an operator runs them: a backup taken with ``flask --app app
db backup`` while serve.py takes writes, restored by its recipe; and what ``db upgrade``
does with a schema newer than the code (a downgrade)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import pytest

from apikeys import crypto
from tests.conftest import POSTGRES_DSN, bearer
from tests.servers import Server, production
from tests.test_cli import assert_clean_failure, flask

KEYS = "/api/v1/org/api-keys"
CHECK = "/api/v1/auth/check"
#: Keys made before the file is copied: few, so that the WAL stays far below SQLite's
#: automatic checkpoint (1,000 pages) and their writes are still only there.
FIRST_KEYS = 10
#: Keys the writer makes at most: a bound for a broken server.
MOST_KEYS = 5000


class Writer(threading.Thread):
    """Creates keys one after another through the API until stopped; keeps each created
    key's secret with the times its request was sent and answered."""

    def __init__(self, server: Server, admin: str) -> None:
        super().__init__(daemon=True)
        self.server, self.admin = server, admin
        self.created: list[tuple[float, float, dict]] = []
        self.failures: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        for number in range(MOST_KEYS):
            if self.stop.is_set():
                return
            sent = time.monotonic()
            reply = self.server.request(
                "POST",
                KEYS,
                {**bearer(self.admin), "Content-Type": "application/json"},
                json.dumps({"name": f"key-{number}", "scopes": ["read:billing"]}).encode(),
            )
            if reply.status != 201:
                self.failures.append(reply.body)
                return
            self.created.append((sent, time.monotonic(), json.loads(reply.body)))

    def answered_before(self, moment: float) -> list[dict]:
        return [key for _, answered, key in list(self.created) if answered < moment]

    def sent_after(self, moment: float) -> list[dict]:
        return [key for sent, _, key in list(self.created) if sent > moment]

    def wait_for(self, count: int) -> None:
        while len(self.created) < count:
            assert self.is_alive(), self.failures
            time.sleep(0.02)


def verifies(server: Server, key: dict) -> int:
    headers = {**bearer(key["key"]), "X-Required-Scope": "read:billing"}
    return server.request("GET", CHECK, headers).status


def test_a_backup_taken_under_writes_restores_every_key_created_before_it(tmp_path):
    admin = crypto.generate_secret()
    database = tmp_path / "apikeys.db"
    url = f"sqlite:///{database}"
    env = {"DATABASE_URL": url, "APIKEYS_BOOTSTRAP_KEY": admin}
    backup = tmp_path / "backup.db"

    with production(tmp_path, env) as server:
        writer = Writer(server, admin)
        writer.start()
        writer.wait_for(FIRST_KEYS)
        began = time.monotonic()
        # What copying the file would give: writes still in the WAL are not in it.
        shutil.copy(database, tmp_path / "copy-of-the-file.db")
        (taken,) = flask(url, ("db", "backup", str(backup)))
        ended = time.monotonic()
        writer.wait_for(len(writer.answered_before(ended)) + 5)
        writer.stop.set()
        writer.join(30)
        assert not writer.failures, writer.failures
        before, after = writer.answered_before(began), writer.sent_after(ended)

    assert taken.returncode == 0, taken.stderr
    written = json.loads(taken.stdout)
    assert written["backup"] == str(backup)
    assert written["bytes"] == backup.stat().st_size
    assert written["migrations"] == ["0001_initial", "0002_readiness_probe"]
    assert not list(tmp_path.glob(".backup.db.partial-*"))
    with sqlite3.connect(tmp_path / "copy-of-the-file.db") as copy:
        copied = {key_id for (key_id,) in copy.execute("SELECT id FROM api_key")}
    assert not {key["id"] for key in before} <= copied

    # The README's restore: with the service stopped, the database's WAL and shared-memory
    # files removed, the backup copied in its place; then start it.
    for leftover in ("apikeys.db-wal", "apikeys.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    shutil.copy(backup, database)
    with production(tmp_path, {"DATABASE_URL": url}) as restored:
        assert [verifies(restored, key) for key in before] == [200] * len(before)
        assert [verifies(restored, key) for key in after] == [401] * len(after)
        listed = restored.request("GET", KEYS, bearer(admin))
    assert listed.status == 200
    names = {key["name"] for key in json.loads(listed.body)["data"]}
    assert {key["name"] for key in before} <= names
    assert not names & {key["name"] for key in after}
    assert len(before) >= FIRST_KEYS and len(after) >= 5


@pytest.mark.parametrize(
    ("database", "target", "message"),
    [
        (POSTGRES_DSN, "backup.db", "for PostgreSQL use pg_dump"),
        ("sqlite:///{tmp}/missing.db", "backup.db", "no database at"),
        ("sqlite:///{tmp}/apikeys.db", "no/such/directory/backup.db", "unable to open"),
    ],
)
def test_a_backup_that_cannot_be_made_says_why_and_writes_nothing(
    tmp_path, database, target, message
):
    if "apikeys.db" in database:
        flask(database.format(tmp=tmp_path), ("db", "upgrade"))
    (result,) = flask(database.format(tmp=tmp_path), ("db", "backup", str(tmp_path / target)))
    assert_clean_failure(result, message)
    assert not (tmp_path / target).exists()
    assert not (tmp_path / "missing.db").exists()


def test_an_upgrade_keeps_a_newer_releases_migrations_and_applies_nothing(tmp_path):
    """A downgrade: the older code's ``db upgrade`` (and serve.py's start) finds a
    migration it does not know; it applies nothing, undoes nothing, and says so."""
    url = f"sqlite:///{tmp_path / 'apikeys.db'}"
    flask(url, ("db", "upgrade"))
    with sqlite3.connect(tmp_path / "apikeys.db") as connection:
        connection.execute(
            "INSERT INTO schema_migration (name, applied) VALUES ('0099_newer', '2030-01-01')"
        )
    (upgraded,) = flask(url, ("db", "upgrade"))
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout) == {
        "applied": [],
        "current": ["0001_initial", "0002_readiness_probe", "0099_newer"],
    }
