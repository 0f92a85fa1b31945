"""The store under load and at rest: races, SQLite's locking, secrets, final revocations."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from apikeys import crypto, db, service
from apikeys.errors import KeyNotFound, KeyRevoked
from apikeys.models import ApiKey
from apikeys.verification import verify
from app import create_app
from tests.concurrency import run_concurrently
from tests.conftest import bearer, prepared

API = "/api/v1/org/api-keys"


def call(port: int, method: str, path: str, headers: dict, body: object = None):
    """One HTTP request on its own connection: (status, parsed JSON body or None)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        connection.request(
            method, path, body=payload, headers={"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def all_at_once(count: int, request):
    """``request(i)`` from ``count`` threads released together; their results in order."""
    barrier = threading.Barrier(count)

    def released(i):
        barrier.wait(timeout=30)
        return request(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(released, range(count)))


def sqlite_bytes(database_url: str) -> bytes:
    """The SQLite database as it is on disk: the main file and its write-ahead log."""
    path = Path(database_url.removeprefix("sqlite:///"))
    files = [path, path.with_name(path.name + "-wal")]
    return b"".join(file.read_bytes() for file in files if file.exists())


@pytest.mark.both_databases
def test_concurrent_creates_of_one_name_make_exactly_one_key(server, admin, org):
    # More requests than the connection pool holds: the surplus waits, it never fails.
    results = all_at_once(
        40,
        lambda _: call(
            server, "POST", API, bearer(admin.key), {"name": "race", "scopes": ["read:billing"]}
        ),
    )

    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [400] * 39, results
    assert {body["error"]["code"] for status, body in results if status == 400} == {"name_taken"}
    assert [key.name for key in ApiKey.live(org.id) if key.name == "race"] == ["race"]


@pytest.mark.both_databases
def test_concurrent_creates_of_distinct_names_all_succeed(server, admin, org):
    results = all_at_once(
        24,
        lambda i: call(
            server, "POST", API, bearer(admin.key), {"name": f"k{i}", "scopes": ["read:billing"]}
        ),
    )

    assert [status for status, _ in results] == [201] * 24, results
    assert ApiKey.live(org.id).count() == 25


def _hammer(database_url: str, worker: int) -> int:
    """Every kind of write the service makes, in a loop, from one process."""
    db.init(database_url)
    organization = service.create_organization(f"org-{worker}")
    for i in range(20):
        # A read-then-write transaction: the pattern that deadlocks into
        # "database is locked" when the write lock is not taken up front.
        service.bootstrap(crypto.generate_secret(), "shared")
        issued = service.create_key(organization.id, f"key-{i}", ["read:billing"])
        assert verify(issued.key, last_used_interval=0) is not None
        service.revoke_key(organization.id, issued.id)
    db.close_all()
    return worker


def test_concurrent_writer_processes_never_find_sqlite_locked(app, database_url):
    outcomes = run_concurrently(_hammer, [(database_url, worker) for worker in range(4)])

    assert sorted(outcomes) == [("ok", worker) for worker in range(4)], outcomes
    db.init(database_url)
    assert ApiKey.select().count() == 4 * 20 * 2
    assert ApiKey.select().where(ApiKey.revoked_at.is_null()).count() == 4 * 20


def _open_files(path: str) -> int:
    """How many file descriptors of this process point at ``path``."""
    descriptors = Path("/proc/self/fd")
    return sum(1 for fd in descriptors.iterdir() if _target(fd) == path)


def _target(fd: Path) -> str | None:
    try:
        return str(fd.readlink())
    except OSError:  # closed between the listing and the read
        return None


def test_sqlite_connections_live_and_die_with_their_threads(server, admin, database_url):
    """One connection per thread, kept for its life: a server that runs each request on a
    new thread (as this one does) must not pile them up. A thread's connection is closed
    when a later thread opens its own, so the few threads still ending when the next
    request comes may keep theirs a little longer; 50 requests must not leave 50."""
    path = database_url.removeprefix("sqlite:///")
    assert call(server, "GET", API, bearer(admin.key))[0] == 200
    before = _open_files(path)
    for _ in range(50):
        assert call(server, "GET", API, bearer(admin.key))[0] == 200
    assert _open_files(path) <= before + 4


def test_a_thread_keeps_its_sqlite_connection_between_requests(app, client, admin):
    client.get(API, headers=bearer(admin.key))
    kept = db.database.connection()
    assert client.get(API, headers=bearer(admin.key)).status_code == 200
    assert db.database.connection() is kept


_EXIT_WHILE_THREADS_QUERY = """
import sys, threading, time
from apikeys import db
db.init(sys.argv[1])
db.migrate()
db.close_all()

def serve():
    db.database.execute_sql("SELECT 1").fetchone()
    db.release_connection(None)  # the end of a request: the thread keeps its connection
    while True:
        db.database.execute_sql("SELECT count(*) FROM api_key").fetchone()

for _ in range(4):
    threading.Thread(target=serve, daemon=True).start()
time.sleep(0.05)
"""


def test_the_process_exits_cleanly_while_threads_still_query(tmp_path):
    """A thread's connection is never closed under it, not even as the interpreter exits."""
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-c", _EXIT_WHILE_THREADS_QUERY, url],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_a_transaction_left_open_is_rolled_back_at_the_end_of_the_request(app, caplog):
    connection = db.database.connection()
    connection.execute("BEGIN IMMEDIATE")
    db.release_connection(None)
    assert not connection.in_transaction
    assert "left a transaction open" in caplog.text
    # Another connection can take the write lock at once.
    other = sqlite3.connect(db.database.database, timeout=0)
    with closing(other):
        other.execute("BEGIN IMMEDIATE")
        other.rollback()


@pytest.mark.parametrize(("timeout", "expected_ms"), [(None, 5000), (0.5, 500), (12, 12_000)])
def test_sqlite_runs_in_wal_mode_with_the_database_timeout_as_busy_timeout(
    settings, database_url, timeout, expected_ms
):
    prepared(create_app(settings | ({"DATABASE_TIMEOUT": timeout} if timeout else {})))
    journal_mode = db.database.execute_sql("PRAGMA journal_mode").fetchone()[0]
    busy_timeout_ms = db.database.execute_sql("PRAGMA busy_timeout").fetchone()[0]

    assert journal_mode == "wal"
    assert busy_timeout_ms == expected_ms
    # WAL is a property of the file: any other connection finds it too.
    with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_secret_never_reaches_the_sqlite_files(app, client, admin, database_url):
    created = client.post(
        API, headers=bearer(admin.key), json={"name": "ci", "scopes": ["read:api_keys"]}
    )
    assert created.status_code == 201
    secret = created.json["key"]
    assert client.get(API, headers=bearer(secret)).status_code == 200
    assert client.get(f"{API}/{created.json['id']}", headers=bearer(secret)).status_code == 200
    from_cli = app.test_cli_runner().invoke(
        args=["keys", "create", "--org", "acme", "--name", "cli", "--scope", "read:billing"]
    )
    cli_secret = json.loads(from_cli.stdout)["key"]

    stored = sqlite_bytes(database_url)

    assert crypto.hash_secret(secret).encode() in stored  # we are reading the right bytes
    for plain in (secret, cli_secret, admin.key):
        body = plain.removeprefix(crypto.PREFIX)[:-6]
        assert plain.encode() not in stored
        assert body.encode() not in stored


@pytest.mark.both_databases
def test_the_secret_never_reaches_the_logs(server, admin, caplog, capsys):
    caplog.set_level("DEBUG")

    status, created = call(
        server,
        "POST",
        API,
        bearer(admin.key),
        {"name": "ci", "scopes": ["read:api_keys", "write:api_keys"]},
    )
    secret = created["key"]
    assert call(server, "GET", API, bearer(secret))[0] == 200
    assert call(server, "GET", API, {"X-API-Key": secret})[0] == 200
    assert call(server, "DELETE", f"{API}/{created['id']}", bearer(secret))[0] == 204
    assert call(server, "GET", API, bearer(secret))[0] == 401

    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert status == 201
    assert f"POST {API}" in logs  # the access log lines were captured
    for plain in (secret, admin.key):
        assert plain not in logs
        assert plain.removeprefix(crypto.PREFIX)[:-6] not in logs


@pytest.mark.both_databases
def test_revocation_cannot_be_undone_through_the_model(app, org, make_key):
    issued = make_key(name="gone", key_scopes=("read:billing",))
    stale = ApiKey.get_by_id(issued.id)  # loaded before the revocation
    ApiKey.revoke(org.id, issued.id)
    revoked_at = ApiKey.get_by_id(issued.id).revoked_at

    # A revoked instance saved, one that clears revoked_at, a stale instance saved later.
    revoked = ApiKey.get_by_id(issued.id)
    revoked.name = "renamed"
    with pytest.raises(KeyRevoked):
        revoked.save()
    resurrected = ApiKey.get_by_id(issued.id)
    resurrected.revoked_at = None
    with pytest.raises(KeyRevoked):
        resurrected.save()
    stale.name = "renamed"
    with pytest.raises(KeyRevoked):
        stale.save()
    with pytest.raises(KeyRevoked):
        stale.save(only=[ApiKey.name])

    assert ApiKey.get_by_id(issued.id).revoked_at == revoked_at
    assert ApiKey.get_by_id(issued.id).name == "gone"
    assert verify(issued.key, last_used_interval=60) is None
    assert service.list_keys(org.id) == []
    # The one way in is revoke, and it works once.
    with pytest.raises(KeyNotFound):
        ApiKey.revoke(org.id, issued.id)


@pytest.mark.both_databases
def test_a_live_key_can_still_be_saved(app, org, make_key):
    issued = make_key(name="live", key_scopes=("read:billing",))
    live = ApiKey.get_by_id(issued.id)
    live.name = "renamed"

    live.save()

    assert ApiKey.get_by_id(issued.id).name == "renamed"
    assert verify(issued.key, last_used_interval=60).scopes == {"read:billing"}


def test_the_secret_stays_out_of_the_issued_keys_repr(app, org, make_key):
    issued = make_key()
    assert issued.key not in repr(issued)
    assert issued.key not in str(issued)


def test_the_issued_key_carries_what_the_created_schema_shows(app, org, make_key):
    issued = make_key(name="shown", key_scopes=("read:billing",), expires_in_days=3)
    stored = ApiKey.get_by_id(issued.id)
    assert (issued.organization_id, issued.name, issued.scopes) == (org.id, "shown", stored.scopes)
    assert (issued.created_at, issued.expires_at) == (stored.created_at, stored.expires_at)
    assert stored.key_hash == crypto.hash_secret(issued.key)


@pytest.mark.both_databases
def test_the_lookup_by_hash_finds_live_keys_only(app, org, make_key):
    issued = make_key(name="found", key_scopes=("read:billing", "read:sessions"))
    digest = crypto.hash_secret(issued.key)

    found = ApiKey.find_by_secret_hash(digest)
    assert (found.id, found.organization_id, found.key_hash) == (issued.id, org.id, digest)
    assert (found.scopes, found.expires_at, found.last_used_at) == (issued.scopes, None, None)
    assert ApiKey.find_by_secret_hash(crypto.hash_secret(crypto.generate_secret())) is None
    ApiKey.revoke(org.id, issued.id)
    assert ApiKey.find_by_secret_hash(digest) is None
