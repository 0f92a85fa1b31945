"""PATCH and roll on the production server with two workers: the very next request on
every worker sees the change, since every check reads the database."""

from __future__ import annotations

import json

import pytest

from apikeys import crypto
from tests.conftest import REDIS_URL, bearer
from tests.servers import ROOMY_LIMITS, Reply, Server, production

pytestmark = pytest.mark.both_databases

WORKERS = 2
ROUND, MAX_REQUESTS = 8, 400
URL = "/api/v1/org/api-keys"


@pytest.fixture
def admin_secret():
    return crypto.generate_secret()


@pytest.fixture
def server(tmp_path, database_url, redis_client, admin_secret):
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": admin_secret,
        **ROOMY_LIMITS,
    }
    with production(tmp_path, env, workers=WORKERS) as server:
        yield server


def on_every_worker(server: Server, secret: str, scope: str) -> list[Reply]:
    """Checks over fresh connections until every worker has answered at least one."""
    headers = {**bearer(secret), "X-Required-Scope": scope}
    replies, workers = server.until_every_worker(
        lambda: server.request("GET", "/api/v1/auth/check", headers), WORKERS, ROUND, MAX_REQUESTS
    )
    assert len(workers) == WORKERS, f"only workers {workers} answered: {server.log()}"
    return replies


def statuses(replies: list[Reply]) -> set[int]:
    return {reply.status for reply in replies}


def send(server: Server, method: str, path: str, secret: str, body: object = None) -> Reply:
    headers = {**bearer(secret), "Content-Type": "application/json"}
    return server.request(method, path, headers, json.dumps(body).encode() if body else b"")


def test_a_patch_and_a_roll_are_seen_by_the_next_check_on_every_worker(server, admin_secret):
    created = send(
        server, "POST", URL, admin_secret, {"name": "sidecar", "scopes": ["read:billing"]}
    )
    assert created.status == 201, created.body
    key = json.loads(created.body)
    assert statuses(on_every_worker(server, key["key"], "read:billing")) == {200}

    patched = send(
        server,
        "PATCH",
        f"{URL}/{key['id']}",
        admin_secret,
        {"scopes": ["read:sessions"], "rate_limit": "50000/minute"},
    )
    assert patched.status == 200, patched.body
    assert statuses(on_every_worker(server, key["key"], "read:billing")) == {403}
    replies = on_every_worker(server, key["key"], "read:sessions")
    assert statuses(replies) == {200}
    assert {reply.headers["RateLimit-Limit"] for reply in replies} == {"50000"}

    rolled = send(server, "POST", f"{URL}/{key['id']}/roll", admin_secret)
    assert rolled.status == 200, rolled.body
    assert statuses(on_every_worker(server, key["key"], "read:sessions")) == {401}
    assert statuses(on_every_worker(server, json.loads(rolled.body)["key"], "read:sessions")) == {
        200
    }
