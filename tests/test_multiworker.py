"""The check on the production server with two workers: revocation is seen by every worker
at once."""

from __future__ import annotations

import json

import pytest

from apikeys import crypto
from tests.conftest import REDIS_URL, bearer
from tests.servers import ROOMY_LIMITS, Reply, Server, StartFailed, production

WORKERS = 2
# Requests come in rounds of parallel fresh connections until every worker has served
# some; the cap only bounds a broken server.
ROUND, MAX_REQUESTS = 8, 400


@pytest.fixture
def admin_secret():
    return crypto.generate_secret()


@pytest.fixture
def server(tmp_path, redis_client, admin_secret):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": admin_secret,
        **ROOMY_LIMITS,
    }
    with production(tmp_path, env, workers=WORKERS) as server:
        yield server


def checks_on_every_worker(server: Server, secret: str) -> tuple[list[Reply], set[int]]:
    """Checks over fresh connections until every worker has answered at least one."""
    headers = {**bearer(secret), "X-Required-Scope": "read:billing"}
    return server.until_every_worker(
        lambda: server.request("GET", "/api/v1/auth/check", headers), WORKERS, ROUND, MAX_REQUESTS
    )


def test_revocation_is_seen_by_the_next_check_on_every_worker(server, admin_secret):
    created = server.request(
        "POST",
        "/api/v1/org/api-keys",
        {**bearer(admin_secret), "Content-Type": "application/json"},
        json.dumps({"name": "sidecar", "scopes": ["read:billing"]}).encode(),
    )
    assert created.status == 201, created.body
    key = json.loads(created.body)

    before, workers = checks_on_every_worker(server, key["key"])
    assert len(workers) == WORKERS, f"only workers {workers} answered: {server.log()}"
    assert {reply.status for reply in before} == {200}

    revoked = server.request("DELETE", f"/api/v1/org/api-keys/{key['id']}", bearer(admin_secret))
    assert revoked.status == 204

    after, workers = checks_on_every_worker(server, key["key"])
    assert len(workers) == WORKERS, f"only workers {workers} answered: {server.log()}"
    assert [reply.status for reply in after] == [401] * len(after)


def test_a_faulty_policy_file_stops_the_server_naming_the_line(tmp_path, redis_client):
    policy = tmp_path / "policy.txt"
    policy.write_text("GET /api/v1/billing/** read:billing\nGET /api/v1/x/** read:everything\n")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_POLICY_FILE": str(policy),
    }
    with pytest.raises(StartFailed) as failure, production(tmp_path, env):
        pass
    assert failure.value.returncode != 0
    assert f"{policy}, line 2: unknown scope 'read:everything'" in failure.value.log
