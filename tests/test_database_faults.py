"""A database that is locked, full or unwritable: 503 where a write is needed, never 500,
never a wait past DATABASE_TIMEOUT, and the check still answers from its read alone.

Each fault is real: another process holds SQLite's write lock, the database lives on a
small tmpfs of the test's own that is filled up, or the file is made immutable (we run
as root: a mode bit would not stop a write).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from apikeys import crypto, db, scopes, service, verification
from apikeys.config import ConfigError
from apikeys.models import ApiKey, IssuedKey, Organization
from app import create_app
from tests.conftest import REDIS_URL, bearer, prepared
from tests.servers import production, wait_for_workers

API = "/api/v1/org/api-keys"
CHECK = "/api/v1/auth/check"
READ = {"X-Required-Scope": "read:api_keys"}
READ_BILLING = {"X-Required-Scope": "read:billing"}

_HOLD_WRITE_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@contextmanager
def write_lock_held(path: str) -> Iterator[None]:
    """Another process holds the SQLite file's write lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own, to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@contextmanager
def filled(mount: Path) -> Iterator[None]:
    """Every byte of ``mount`` taken by a filler file until the block ends."""
    filler = mount / "filler"
    with filler.open("wb") as output:
        try:
            while True:
                output.write(b"\0" * 65536)
                output.flush()
        except OSError:
            pass  # no space left on the device: the point
    try:
        yield
    finally:
        filler.unlink()


@pytest.fixture
def on_disk(settings, disk):
    """Settings whose SQLite database lives on ``disk``."""
    return settings | {"DATABASE_URL": f"sqlite:///{disk / 'apikeys.db'}"}


def _admin() -> IssuedKey:
    """A key with every scope, made straight in the store (``make_key`` needs the default app)."""
    return service.create_key(Organization.create(name="acme").id, "admin", scopes.SCOPES)


def create(client, admin, name: str):
    return client.post(
        API, headers=bearer(admin.key), json={"name": name, "scopes": ["read:billing"]}
    )


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "service_unavailable"
    # The database's own hint, never a rate window's reset.
    assert response.headers["Retry-After"] == "1"


@pytest.fixture
def short_backoff(monkeypatch):
    monkeypatch.setattr(verification, "TOUCH_BACKOFF_SECONDS", 0.2)


def test_a_write_behind_another_process_write_lock_is_503_after_the_database_timeout(
    settings, database_url, make_key
):
    app = create_app(settings | {"DATABASE_TIMEOUT": 1})
    admin = make_key(name="admin")
    client = app.test_client()
    with write_lock_held(database_url.removeprefix("sqlite:///")):
        started = time.monotonic()
        response = create(client, admin, "locked-out")
        waited = time.monotonic() - started
    assert_unavailable(response)
    assert 0.9 <= waited < 4
    assert create(client, admin, "after").status_code == 201


def test_a_check_answers_at_once_while_another_process_holds_the_write_lock(
    app, client, database_url, make_key, short_backoff, caplog
):
    caplog.set_level(logging.INFO, logger="apikeys.verification")
    reader = make_key(name="reader", key_scopes=["read:api_keys"])  # never used: a write is due
    with write_lock_held(database_url.removeprefix("sqlite:///")):
        started = time.monotonic()
        statuses = [client.get(CHECK, headers=bearer(reader.key) | READ).status_code]
        statuses += [client.get(CHECK, headers=bearer(reader.key) | READ).status_code]
        waited = time.monotonic() - started
    assert statuses == [200, 200]
    assert waited < 2  # not the database timeout (5 s), let alone twice
    assert ApiKey.get_by_id(reader.id).last_used_at is None
    assert caplog.text.count("cannot record keys' last use") == 1
    assert reader.key not in caplog.text

    # The lock gone and the back-off over, a later check records the use.
    time.sleep(0.3)
    assert client.get(CHECK, headers=bearer(reader.key) | READ).status_code == 200
    assert ApiKey.get_by_id(reader.id).last_used_at is not None
    assert "recording keys' last use again" in caplog.text


def test_on_a_full_disk_writes_are_503_checks_pass_and_the_service_is_not_ready(
    on_disk, disk, short_backoff
):
    app = prepared(create_app(on_disk))
    client = app.test_client()
    admin = _admin()
    assert client.get("/readyz").status_code == 200
    with filled(disk):
        # SQLite reuses the room its write-ahead log already has: a few writes may still fit.
        for attempt in range(1000):
            response = create(client, admin, f"no-room-{attempt}")
            if response.status_code != 201:
                break
        assert_unavailable(response)
        check = client.get(CHECK, headers=bearer(admin.key) | READ)
        assert check.status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["error"]["details"]["database"] == "full"
    assert create(client, admin, "room-again").status_code == 201
    assert client.get("/readyz").status_code == 200


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``path`` unwritable, even to root, until the block ends (the file's immutable flag)."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_connection_opened_while_the_file_was_unwritable_is_replaced_once_writable(
    settings, database_url, short_backoff
):
    app = prepared(create_app(settings))
    client = app.test_client()
    admin = _admin()
    db.close_all()  # as after a restart: the next request opens this thread's connection
    with immutable(Path(database_url.removeprefix("sqlite:///"))):
        # SQLite opens the file read-only, and that handle would stay read-only for good.
        assert client.get(CHECK, headers=bearer(admin.key) | READ).status_code == 200
        assert_unavailable(create(client, admin, "unwritable"))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["error"]["details"]["database"] == "read-only"
    # The same thread, the file writable again: every write goes through.
    assert [create(client, admin, f"k{i}").status_code for i in range(3)] == [201] * 3
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("value", ["0", "-1", "soon", "7200"])
def test_a_database_timeout_out_of_range_stops_the_app_at_start(settings, monkeypatch, value):
    monkeypatch.setenv("DATABASE_TIMEOUT", value)
    with pytest.raises(ConfigError, match="DATABASE_TIMEOUT"):
        create_app(settings)


@pytest.fixture
def on_postgresql(settings, postgres_url):
    return settings | {"DATABASE_URL": postgres_url, "DATABASE_TIMEOUT": 1}


def test_postgresql_connections_carry_the_database_timeout(on_postgresql, postgres_url):
    prepared(create_app(on_postgresql))
    with db.database.connection_context():
        shown = {
            name: db.database.execute_sql(f"SHOW {name}").fetchone()[0]
            for name in ("statement_timeout", "lock_timeout", "search_path")
        }
        parameters = db.database.connection().info.get_parameters()
    # The URL's own options (the test's schema) are kept beside ours.
    assert shown == {
        "statement_timeout": "1s",
        "lock_timeout": "1s",
        "search_path": shown["search_path"],
    }
    assert shown["search_path"] in postgres_url
    assert parameters["connect_timeout"] == "2"
    assert parameters["keepalives"] == "1"


@contextmanager
def row_locked(postgres_url: str, key_id: str) -> Iterator[None]:
    """Another connection holds the key's row lock until the block ends."""
    with psycopg.connect(postgres_url) as other:
        # Should the service wait without bound, the lock goes after 10 s: a failure, not a hang.
        other.execute("SET idle_in_transaction_session_timeout = '10s'")
        other.execute("SELECT 1 FROM api_key WHERE id = %s FOR UPDATE", (key_id,))
        yield
        other.rollback()


def test_a_postgresql_row_lock_held_elsewhere_is_503_for_a_write_and_no_wait_for_a_check(
    on_postgresql, postgres_url, short_backoff
):
    client = prepared(create_app(on_postgresql)).test_client()
    admin = _admin()
    victim = service.create_key(admin.organization_id, "victim", ["read:api_keys"])
    with row_locked(postgres_url, victim.id):
        started = time.monotonic()
        check = client.get(CHECK, headers=bearer(victim.key) | READ)
        checked = time.monotonic() - started
        revoke = client.delete(f"{API}/{victim.id}", headers=bearer(admin.key))
        revoked = time.monotonic() - started - checked
    assert check.status_code == 200
    assert checked < 0.9  # the touch's own short bound, not the 1 s lock_timeout
    assert_unavailable(revoke)
    assert 0.9 <= revoked < 4
    assert client.delete(f"{API}/{victim.id}", headers=bearer(admin.key)).status_code == 204


def test_under_another_process_write_lock_the_production_server_keeps_answering(tmp_path):
    """Checks whose write of last use is due, many at once, with the write lock held
    elsewhere: none waits out the database timeout, and /healthz is not starved of threads."""
    secret = crypto.generate_secret()
    path = tmp_path / "apikeys.db"
    env = {
        "DATABASE_URL": f"sqlite:///{path}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": secret,
        "LAST_USED_INTERVAL_SECONDS": "0",  # every check is due to write
    }
    with production(tmp_path, env, workers=2) as server:
        wait_for_workers(server, 2)  # both workers meet the lock
        with write_lock_held(str(path)):
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=8) as clients:
                checks = list(
                    clients.map(
                        lambda _: server.request("GET", CHECK, bearer(secret) | READ).status,
                        range(40),
                    )
                )
                health_started = time.monotonic()
                health = server.request("GET", "/healthz").status
                health_took = time.monotonic() - health_started
            took = time.monotonic() - started
            assert checks == [200] * 40
            assert health == 200
            assert health_took < 2
            assert took < 5  # one database timeout (5 s) would be more than the whole burst
            assert secret not in server.log()


def test_writes_queued_behind_another_process_write_lock_never_hold_up_the_check(tmp_path):
    """Key management waiting on the write lock takes every thread it can get; the check
    runs in threads of its own, so it still answers at once."""
    secret = crypto.generate_secret()
    path = tmp_path / "apikeys.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": REDIS_URL}
    env |= {"APIKEYS_BOOTSTRAP_KEY": secret, "RATE_LIMIT_PER_KEY": "100000/minute"}
    body = json.dumps({"name": "n", "scopes": ["read:billing"]}).encode()
    create = bearer(secret) | {"Content-Type": "application/json"}
    with production(tmp_path, env, workers=2) as server:
        wait_for_workers(server, 2)
        server.request("GET", CHECK, bearer(secret) | READ)  # last use recorded: none due
        with write_lock_held(str(path)), ThreadPoolExecutor(max_workers=24) as clients:
            creates = [clients.submit(server.request, "POST", API, create, body) for _ in range(16)]
            time.sleep(0.5)  # every worker's API threads now wait on the lock
            took = []
            for _ in range(10):
                started = time.monotonic()
                assert server.request("GET", CHECK, bearer(secret) | READ).status == 200
                took.append(time.monotonic() - started)
            assert max(took) < 1, took
            # Four at a time wait out the database timeout, the rest the request deadline:
            # 503 each, or the client's own 10 s patience running out first.
            assert all(_status_or_timeout(future) in (503, "timeout") for future in creates)


def _status_or_timeout(future) -> int | str:
    try:
        return future.result().status
    except TimeoutError:
        return "timeout"


def test_a_write_answered_503_by_the_request_deadline_is_rolled_back_not_committed_later(
    tmp_path,
):
    """The deadline (1 s here) answers 503 "retry shortly" while the write still waits for
    the lock, which comes a second later: the write must not happen behind the client's
    back. Neither a key whose secret no one saw, nor a roll that ends a secret in use."""
    admin = crypto.generate_secret()
    path = tmp_path / "apikeys.db"
    env = {"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": REDIS_URL}
    env |= {"APIKEYS_BOOTSTRAP_KEY": admin, "RATE_LIMIT_PER_KEY": "100000/minute"}
    headers = bearer(admin) | {"Content-Type": "application/json"}

    def key(name: str) -> bytes:
        return json.dumps({"name": name, "scopes": ["read:billing"]}).encode()

    target = "tests.wsgi_apps:impatient_service"
    with production(tmp_path, env, workers=1, target=target) as server:

        def late(path_: str, body: bytes = b"") -> int:
            with write_lock_held(str(path)):
                status = server.request("POST", path_, headers, body).status
                time.sleep(1)  # the write waits on, and gets the lock in its 5 s
            return status

        victim = json.loads(server.request("POST", API, headers, key("victim")).body)
        assert late(API, key("late")) == 503
        assert late(f"{API}/{victim['id']}/roll") == 503
        # One app thread: what follows runs once the abandoned writes have ended.
        listed = json.loads(server.request("GET", API, headers).body)["data"]
        events = json.loads(server.request("GET", "/api/v1/org/audit-events", headers).body)
        check = server.request("GET", CHECK, bearer(victim["key"]) | READ_BILLING)
        again = server.request("POST", API, headers, key("late"))
        log = server.log()
    names = [key["name"] for key in listed]
    assert len(names) == 2 and "victim" in names and "late" not in names  # and the bootstrap
    assert [e["action"] for e in events["data"] if e["target"]["key_id"] == victim["id"]] == [
        "api_key.created"
    ]
    assert check.status == 200  # the old secret still works: the roll never happened
    assert again.status == 201
    assert "Traceback" not in log
