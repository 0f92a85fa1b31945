"""Start-up and the database: only serve.py (once, before any worker) and the commands
that need the database touch it at start, so a database outage never stops a worker
from starting, nor a command that needs no database from running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from apikeys import crypto
from app import create_app
from tests.conftest import REDIS_URL, bearer
from tests.servers import (
    ROOMY_LIMITS,
    ROOT,
    SERVE,
    Reply,
    Server,
    free_port,
    postgres_server,
    production,
)

API = "/api/v1/org/api-keys"
WORKERS = 2
# Rounds of parallel fresh connections until the wanted workers have answered; the cap
# only bounds a broken server.
ROUND, MAX_ROUNDS = 8, 50


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable_url(request, tmp_path) -> str:
    """A database URL nothing answers at: a directory that does not exist, a closed port."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'apikeys.db'}"
    return f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"


def answers_from(
    server: Server, path: str, headers: dict, until: Callable[[dict[int, set]], bool]
) -> dict[int, set]:
    """Statuses (and error codes) by worker pid, over rounds of fresh connections, until
    ``until`` holds for them; bounded."""
    seen: dict[int, set] = {}
    for _ in range(MAX_ROUNDS):
        replies = {reply.request_id: reply for reply in _round(server, path, headers)}
        for request_id, pid in server.workers_of(list(replies.values())).items():
            reply = replies[request_id]
            code = json.loads(reply.body)["error"]["code"] if reply.status >= 400 else None
            seen.setdefault(pid, set()).add((reply.status, code))
        if until(seen):
            return seen
    raise AssertionError(f"answers so far {seen}; the log:\n{server.log()}")


def _round(server: Server, path: str, headers: dict) -> list[Reply]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: server.request("GET", path, headers), range(ROUND)))


def started_workers(server: Server) -> int:
    return server.log().count("[INFO] Started worker-")


def test_a_worker_killed_while_the_database_is_down_comes_back_and_answers_503(tmp_path):
    secret = crypto.generate_secret()
    admin = bearer(secret)
    with postgres_server() as database:
        env = {
            "DATABASE_URL": database.url,
            "REDIS_URL": REDIS_URL,
            "APIKEYS_BOOTSTRAP_KEY": secret,
            "DATABASE_TIMEOUT": "1",
            **ROOMY_LIMITS,
        }
        with production(tmp_path, env, workers=WORKERS) as server:
            up = answers_from(server, API, admin, lambda seen: len(seen) == WORKERS)
            assert all(statuses == {(200, None)} for statuses in up.values()), up
            workers = set(up)
            database.stop()

            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while started_workers(server) <= WORKERS:
                assert server.process.poll() is None, f"the server exited:\n{server.log()}"
                assert time.monotonic() < deadline, f"no worker respawned:\n{server.log()}"
                time.sleep(0.1)
            # Past granian's crash-loop window (5.5 s after a respawn): a worker that failed
            # at start would have made it stop every worker by now.
            time.sleep(6)
            assert server.process.poll() is None, f"the server exited:\n{server.log()}"
            assert "crash loop" not in server.log()

            # Every worker, the new one included, answers: the API 503 JSON; /healthz
            # (answered on each worker's event loop, so not in the request log) 200.
            def both(seen: dict[int, set]) -> bool:
                return len(seen) == WORKERS and bool(set(seen) - workers)

            health = [server.request("GET", "/healthz").status for _ in range(4 * ROUND)]
            assert health == [200] * len(health)
            down = answers_from(server, API, admin, both)
            assert victim not in down
            assert all(s == {(503, "service_unavailable")} for s in down.values()), down

            database.start()
            deadline = time.monotonic() + 15
            while True:
                back = answers_from(server, API, admin, both)
                if all(statuses == {(200, None)} for statuses in back.values()):
                    break
                assert time.monotonic() < deadline, back
                time.sleep(0.2)
            assert server.process.poll() is None
            assert secret not in server.log()


def test_serve_py_stops_with_one_line_when_the_database_is_unreachable(unreachable_url):
    env = {
        **os.environ,
        "DATABASE_URL": unreachable_url,
        "REDIS_URL": REDIS_URL,
        "DATABASE_TIMEOUT": "1",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
    }
    result = subprocess.run(
        [sys.executable, str(SERVE)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the database is unreachable: "), line
    # No worker was started: the server stopped before granian began.
    assert "worker" not in result.stdout.lower()


def flask(database_url: str, *command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "DATABASE_TIMEOUT": "1"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_generate_needs_no_database(unreachable_url):
    result = flask(unreachable_url, "keys", "generate")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert crypto.is_well_formed(result.stdout.strip())


@pytest.mark.parametrize(
    "command",
    [("db", "upgrade"), ("orgs", "create", "acme"), ("keys", "list", "--org", "acme")],
)
def test_a_command_that_needs_the_database_fails_in_one_line_when_it_is_unreachable(
    unreachable_url, command
):
    result = flask(unreachable_url, *command)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the database is unreachable: "), line


def test_create_app_opens_no_connection_and_answers_503_until_the_database_is_up(
    tmp_path, redis_prefix
):
    url = f"sqlite:///{tmp_path / 'later' / 'apikeys.db'}"
    client = create_app(
        {"TESTING": True, "DATABASE_URL": url, "RATELIMIT_KEY_PREFIX": redis_prefix}
    ).test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get(API, headers=bearer(crypto.generate_secret()))
    assert response.status_code == 503
    assert response.json["error"]["code"] == "service_unavailable"
