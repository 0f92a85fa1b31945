"""A PostgreSQL that stops: the production server answers 503, never 500, and comes back
by itself when the database does. The cluster is the test's own, never the shared one."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg

from apikeys import crypto, db, scopes, service
from app import create_app
from tests.conftest import REDIS_URL, bearer, prepared
from tests.servers import Postgres, Reply, Server, postgres_server, production, wait_for_workers

API = "/api/v1/org/api-keys"
CHECK = "/api/v1/auth/check"
DATABASE_TIMEOUT = 2


def _requests(server: Server, secret: str, i: int) -> Reply:
    """A check, a list or a create, in turn."""
    if i % 3 == 0:
        return server.request("GET", CHECK, bearer(secret) | {"X-Required-Scope": "read:api_keys"})
    if i % 3 == 1:
        return server.request("GET", API, bearer(secret))
    body = json.dumps({"name": f"k{i}", "scopes": ["read:billing"]}).encode()
    return server.request("POST", API, bearer(secret) | {"Content-Type": "application/json"}, body)


#: Seconds between the "database unavailable" lines of one worker (repeated_warnings).
_THROTTLED_INTERVAL = 10


def _warned(log: str) -> int:
    """The failed requests that the log's "database unavailable" lines stand for: each
    line's own, and those it says it held back."""
    lines = [line for line in log.splitlines() if "database unavailable: " in line]
    held = [re.search(r"and (\d+) more like it", line) for line in lines]
    return len(lines) + sum(int(found.group(1)) for found in held if found)


def _service_env(database: Postgres, admin: str, **settings: str) -> dict[str, str]:
    """serve.py's environment on ``database``, ``admin`` its bootstrap key."""
    env = {"DATABASE_URL": database.url, "REDIS_URL": REDIS_URL, "APIKEYS_BOOTSTRAP_KEY": admin}
    return env | settings


def _names(server: Server, headers: dict[str, str]) -> list[str]:
    """The names of the organization's keys, as the API lists them."""
    return [key["name"] for key in json.loads(server.request("GET", API, headers).body)["data"]]


@contextmanager
def _synchronous_standby_missing(connection: psycopg.Connection) -> Iterator[None]:
    """Every COMMIT waits for a synchronous standby that never comes, until the block ends
    (``connection``: autocommit, on the test's own cluster)."""
    connection.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
    connection.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        connection.execute("ALTER SYSTEM RESET synchronous_standby_names")
        connection.execute("SELECT pg_reload_conf()")


def test_a_stopped_postgresql_is_503_with_retry_after_never_500_and_then_recovers(tmp_path):
    secret = crypto.generate_secret()
    with postgres_server() as database:
        env = {
            "DATABASE_URL": database.url,
            "REDIS_URL": REDIS_URL,
            "APIKEYS_BOOTSTRAP_KEY": secret,
            "DATABASE_TIMEOUT": str(DATABASE_TIMEOUT),
        }
        with production(tmp_path, env, workers=2) as server:
            # Both workers up, so that both meet the outage (a worker started during one
            # is tests/test_startup.py's).
            wait_for_workers(server, 2)
            assert [_requests(server, secret, i).status for i in range(6)] == [200, 200, 201] * 2
            database.stop()

            replies, slowest, i = [], 0.0, 6
            outage_ends = time.monotonic() + 4
            while time.monotonic() < outage_ends:
                started = time.monotonic()
                try:
                    replies.append(_requests(server, secret, i))
                except OSError as error:
                    raise AssertionError(f"{error!r}; the server's log:\n{server.log()}") from None
                slowest, i = max(slowest, time.monotonic() - started), i + 1
            ready = server.request("GET", "/readyz")

            assert {reply.status for reply in replies} == {503}, [r.body for r in replies]
            for reply in replies:
                assert json.loads(reply.body)["error"]["code"] == "service_unavailable"
                assert reply.headers["Retry-After"] == "1"
            assert slowest < DATABASE_TIMEOUT + 3
            assert ready.status == 503
            assert json.loads(ready.body)["error"]["details"]["database"] == "down"
            assert server.request("GET", "/healthz").status == 200
            # One warning per worker for the whole outage, not one per failed request.
            warnings = server.log().count("database unavailable: ")
            assert 1 <= warnings <= 2 < len(replies), (warnings, len(replies))

            database.start()
            back = time.monotonic() + 10
            statuses = []
            while time.monotonic() < back:
                statuses = [_requests(server, secret, i).status for i in range(i, i + 3)]
                replies += [Reply(status, {}, b"") for status in statuses if status == 503]
                i += 3
                if sorted(statuses) == [200, 200, 201]:
                    break
                time.sleep(0.2)
            assert sorted(statuses) == [200, 200, 201]
            assert server.request("GET", "/readyz").status == 200
            assert secret not in server.log()

            # Its last seconds are counted too, once their interval has ended, though no
            # failure came after them: every failed request is in one line or a count.
            counted = 0
            ends = time.monotonic() + _THROTTLED_INTERVAL + 2
            while counted < len(replies) and time.monotonic() < ends:
                time.sleep(0.5)
                counted = _warned(server.log())
            assert counted == len(replies), server.log()[-3000:]


def test_a_paused_postgresql_fails_a_new_connection_after_the_connect_timeout(settings):
    """SIGSTOPped, the server's host still completes the TCP handshake: only the connect
    timeout ends the wait for its greeting. (A query on an open connection waits until the
    server resumes, which nothing on the client side can bound: the server's request
    deadline answers that one.)"""
    with postgres_server() as database:
        app = prepared(
            create_app(
                settings | {"DATABASE_URL": database.url, "DATABASE_TIMEOUT": DATABASE_TIMEOUT}
            )
        )
        organization = service.create_organization("acme")
        admin = service.create_key(organization.id, "admin", scopes.SCOPES)
        db.close_all()  # an empty pool: the next request must connect
        database.pause()
        # Should the connect wait without bound, the server resumes after 15 s: a failure,
        # not a hang.
        safety = threading.Timer(15, database.resume)
        safety.start()
        try:
            started = time.monotonic()
            response = app.test_client().get(API, headers=bearer(admin.key))
            took = time.monotonic() - started
        finally:
            safety.cancel()
            database.resume()
        assert response.status_code == 503
        assert response.json["error"]["code"] == "service_unavailable"
        assert DATABASE_TIMEOUT - 0.5 <= took < DATABASE_TIMEOUT + 3
        assert app.test_client().get(API, headers=bearer(admin.key)).status_code == 200


def test_a_write_the_deadline_answered_503_is_rolled_back_when_postgresql_resumes(tmp_path):
    """PostgreSQL paused in the middle of a create: the deadline (1 s here) answers 503
    "retry shortly", and the INSERT, which completes when the server resumes, is not
    committed after it: no key exists whose secret no one was shown."""
    admin = crypto.generate_secret()
    headers = bearer(admin) | {"Content-Type": "application/json"}
    body = json.dumps({"name": "late", "scopes": ["read:billing"]}).encode()
    with postgres_server() as database:
        env = _service_env(database, admin, DATABASE_TIMEOUT=str(DATABASE_TIMEOUT))
        target = "tests.wsgi_apps:impatient_service"
        with production(tmp_path, env, workers=1, target=target) as server:
            assert server.request("GET", API, headers).status == 200  # a pooled connection
            database.pause()
            try:
                late = server.request("POST", API, headers, body)
                time.sleep(1)  # the INSERT waits on the paused server
            finally:
                database.resume()
            # One app thread: this runs once the abandoned create has ended.
            names = _names(server, headers)
            again = server.request("POST", API, headers, body)
    assert late.status == 503
    assert "late" not in names
    assert again.status == 201


def test_the_deadline_still_holds_after_a_write_on_the_side_has_committed(tmp_path):
    """The key's last use is written in a transaction of its own before the request's
    change (every request writes it here). That commit is not the request's change: when
    the change then waits on a lock past the deadline (1 s here), the answer is 503 and
    the change is not made, rather than a wait for however long the lock is held."""
    admin = crypto.generate_secret()
    headers = bearer(admin) | {"Content-Type": "application/json"}
    body = json.dumps({"name": "victim", "scopes": ["read:billing"]}).encode()
    with postgres_server() as database:
        env = _service_env(database, admin, LAST_USED_INTERVAL_SECONDS="0")
        target = "tests.wsgi_apps:impatient_service"
        with production(tmp_path, env, workers=1, target=target) as server:
            victim = json.loads(server.request("POST", API, headers, body).body)["id"]
            rename = json.dumps({"name": "renamed"}).encode()
            with psycopg.connect(database.url) as other:
                other.execute("LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                patched = server.request("PATCH", f"{API}/{victim}", headers, rename)
                took = time.monotonic() - started
                time.sleep(1)  # the change waits on; the lock goes with this transaction
            # One app thread: this runs once the abandoned change has ended.
            name = json.loads(server.request("GET", f"{API}/{victim}", headers).body)["name"]
    assert patched.status == 503 and took < 3, (patched.status, took)  # not the 5 s lock timeout
    assert name == "victim"


def test_a_commit_cut_off_midway_is_503_saying_the_change_may_have_been_made(tmp_path):
    """A COMMIT waits (for a synchronous standby that never comes) and its connection is
    cut: PostgreSQL has committed it locally. "Retry shortly" would make the client create
    the key again; the answer says instead that the change may have been made."""
    admin = crypto.generate_secret()
    headers = bearer(admin) | {"Content-Type": "application/json"}
    body = json.dumps({"name": "cut", "scopes": ["read:billing"]}).encode()
    with postgres_server() as database, psycopg.connect(database.url, autocommit=True) as other:
        with production(tmp_path, _service_env(database, admin), workers=1) as server:
            assert server.request("GET", API, headers).status == 200
            with _synchronous_standby_missing(other), ThreadPoolExecutor(1) as client:
                created = client.submit(server.request, "POST", API, headers, body)
                _terminate_once_waiting_for_sync_rep(other)
                reply = created.result(timeout=30)
            names = _names(server, headers)
    assert reply.status == 503
    assert "may or may not have been made" in json.loads(reply.body)["error"]["message"]
    assert "cut" in names  # it was made


def _terminate_once_waiting_for_sync_rep(connection: psycopg.Connection) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ended = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        ).fetchall()
        if ended:
            return
        time.sleep(0.05)
    raise AssertionError("no COMMIT waited for a synchronous standby")


def test_a_missing_synchronous_standby_never_holds_the_check_on_its_last_use_write(tmp_path):
    """Every check here writes its key's last use. A COMMIT waiting for a synchronous
    standby heeds no statement or lock timeout: the write on the side commits locally."""
    admin = crypto.generate_secret()
    check = bearer(admin) | {"X-Required-Scope": "read:api_keys"}
    with postgres_server() as database, psycopg.connect(database.url, autocommit=True) as other:
        env = _service_env(database, admin, LAST_USED_INTERVAL_SECONDS="0")
        with production(tmp_path, env, workers=2) as server:
            with _synchronous_standby_missing(other), ThreadPoolExecutor(6) as clients:
                started = time.monotonic()
                replies = list(
                    clients.map(lambda _: server.request("GET", CHECK, check), range(12))
                )
                took = time.monotonic() - started
                waiting = other.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
                ).fetchone()[0]
    assert [reply.status for reply in replies] == [200] * 12
    assert took < 3 and waiting == 0, (took, waiting)
