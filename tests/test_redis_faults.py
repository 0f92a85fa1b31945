"""Redis failing under the production server (two workers): killed, out of memory, paused.

Each test starts a Redis of its own and breaks it; the machine's shared Redis is never
touched. The API's routes and the check spend one budget, fall back to one in-memory
storage while Redis fails, and return to Redis together.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
import redis

from apikeys import crypto
from apikeys.leases import RETRY_SECONDS
from tests.conftest import bearer
from tests.servers import Server, production, redis_server

LIMIT = 20
OUTAGE_SECONDS = 16
LIST = "/api/v1/org/api-keys"
CHECK = "/api/v1/auth/check"


@pytest.fixture
def secret():
    return crypto.generate_secret()


@pytest.fixture
def breakable_redis(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    with redis_server(directory) as (process, url):
        yield process, url


@pytest.fixture
def server(tmp_path, breakable_redis, secret):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": breakable_redis[1],
        "APIKEYS_BOOTSTRAP_KEY": secret,
        "RATE_LIMIT_PER_KEY": f"{LIMIT}/minute",
        "RATE_LIMIT_FAILED_AUTH": "1000/minute",
    }
    with production(tmp_path, env, workers=2) as server:
        yield server


def mixed(server: Server, secret: str, count: int) -> list[int]:
    """``count`` requests of one key, API listings and checks in turn; their statuses."""
    statuses = []
    for number in range(count):
        if number % 2:
            headers = {**bearer(secret), "X-Required-Scope": "read:api_keys"}
            statuses.append(server.request("GET", CHECK, headers).status)
        else:
            statuses.append(server.request("GET", LIST, bearer(secret)).status)
    return statuses


def readiness(server: Server) -> tuple[int, str]:
    """/readyz's status and what it says of Redis."""
    reply = server.request("GET", "/readyz")
    body = json.loads(reply.body)
    assert body["status"] == "ok", body
    return reply.status, body["checks"]["redis"]


def settles_at(server: Server, state: str, timeout: float = 10.0) -> str:
    """What /readyz says of Redis once it says ``state`` (it asks Redis at most every
    RETRY_SECONDS per worker), or after ``timeout``; it must answer 200 throughout."""
    deadline = time.monotonic() + timeout
    while True:
        status, said = readiness(server)
        assert status == 200, said
        if said == state or time.monotonic() > deadline:
            return said
        time.sleep(0.2)


def storage_up(server: Server) -> str:
    for line in server.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("apikeys_ratelimit_storage_up "):
            return line.split()[1]
    raise AssertionError("no apikeys_ratelimit_storage_up in /metrics")


def test_after_a_redis_outage_routes_and_checks_return_to_one_budget(
    tmp_path, breakable_redis, server, secret
):
    process, url = breakable_redis
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    assert mixed(server, secret, 2) == [200, 200]
    process.kill()
    process.wait()
    # Served in memory meanwhile. The outage lasts long enough for any back-off to grow
    # (flask-limiter's doubles from 1 s to 32 s); unauthenticated requests keep the routes
    # busy without spending the key's budget.
    during = mixed(server, secret, 2)
    deadline = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < deadline:
        during.append(server.request("GET", LIST).status)
        time.sleep(0.2)
    assert set(during) == {200, 401}, during
    again = tmp_path / "redis-again"
    again.mkdir()
    with redis_server(again, port=port):
        # Every worker tries Redis again within RETRY_SECONDS of its last attempt.
        time.sleep(RETRY_SECONDS + 1)
        after = Counter(mixed(server, secret, 3 * LIMIT))
    print(f"admitted after recovery: {after[200]} of {3 * LIMIT} (limit {LIMIT}): {after}")
    assert set(after) <= {200, 429}, after
    # Redis came back empty: one budget of LIMIT, spent by routes and checks together.
    assert after[200] == LIMIT, after


def test_redis_out_of_memory_serves_from_memory_and_says_so(breakable_redis, server, secret):
    _, url = breakable_redis
    client = redis.Redis.from_url(url)
    assert mixed(server, secret, 2) == [200, 200]
    client.config_set("maxmemory-policy", "noeviction")
    client.set("filler", b"x" * 2_000_000)
    client.config_set("maxmemory", 1_000_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", 1)
    try:
        statuses = Counter(mixed(server, secret, 3 * LIMIT))
        assert set(statuses) == {200, 429}, statuses
        # Limited still, in each worker's memory: at most a budget per worker.
        assert statuses[200] <= 2 * LIMIT, statuses
        assert readiness(server) == (200, "refusing writes")
        assert storage_up(server) == "0.0"
        # Said as it is, with Redis's reason: not "unreachable".
        log = server.log()
        refusing = "storage refusing writes - falling back to in-memory storage: command not"
        assert f"{refusing} allowed when used memory" in log
        assert "storage unreachable" not in log
    finally:
        client.config_set("maxmemory", 0)
        client.delete("filler")
    time.sleep(RETRY_SECONDS + 1)
    # Back to Redis, which counted nothing while it refused writes.
    first = [server.request("GET", LIST, bearer(secret)) for _ in range(2)]
    assert [reply.status for reply in first] == [200, 200]
    assert {reply.headers["RateLimit-Remaining"] for reply in first} <= {
        str(LIMIT - 3),
        str(LIMIT - 4),
    }
    assert settles_at(server, "ok") == "ok"
    assert storage_up(server) == "1.0"


def test_redis_paused_or_down_costs_no_request_more_than_the_timeout(
    breakable_redis, server, secret
):
    process, _ = breakable_redis
    assert settles_at(server, "ok") == "ok"
    process.send_signal(signal.SIGSTOP)
    slowest, statuses = 0.0, Counter()
    try:
        deadline = time.monotonic() + 2 * RETRY_SECONDS + 1
        while time.monotonic() < deadline:
            for path in (LIST, CHECK, "/readyz"):
                headers = {**bearer(secret), "X-Required-Scope": "read:api_keys"}
                started = time.monotonic()
                reply = server.request("GET", path, headers)
                slowest = max(slowest, time.monotonic() - started)
                statuses[reply.status] += 1
    finally:
        process.send_signal(signal.SIGCONT)
    print(f"Redis paused: slowest request {slowest:.3f} s; statuses {dict(statuses)}")
    # Served, and limited in memory (/readyz answers often enough to spend the budgets).
    assert set(statuses) <= {200, 429} and statuses[200], statuses
    # The storage's socket timeout is 0.5 s; the margin is for a busy machine.
    assert slowest < 1.2, slowest
    process.kill()
    process.wait()
    assert settles_at(server, "down") == "down"
    time.sleep(RETRY_SECONDS)  # until every worker has asked Redis again
    assert storage_up(server) == "0.0"
    assert set(mixed(server, secret, 4)) <= {200, 429}
