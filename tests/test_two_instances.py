"""Scaling out: two instances of the production server (serve.py, two workers each) on one
PostgreSQL and one Redis behave as one service.

The PostgreSQL schema and the Redis server are the module's own: nothing else counts in
that Redis, so a budget's every unit is this test's.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import psycopg
import pytest

from apikeys import crypto
from tests.conftest import POSTGRES_DSN, bearer
from tests.servers import ROOMY_LIMITS, Reply, Server, production, redis_server

CHECK = "/api/v1/auth/check"
KEYS = "/api/v1/org/api-keys"
WORKERS = 2
#: Requests go in rounds of fresh connections, half to each instance, until every worker
#: wanted has served some; the cap only bounds a broken server.
ROUND, MAX_REQUESTS = 8, 400
#: Small enough that every unit is taken from Redis one at a time (a lease is a sixteenth
#: of what remains): the budget is exact across workers, not merely never exceeded.
BUDGET = 12


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def start_pair(tmp_path_factory, redis_url) -> Iterator[Callable]:
    """Starts two instances on one new PostgreSQL schema and the module's Redis; all are
    stopped, and the schemas dropped, at the end of the module."""
    schemas: list[str] = []
    with ExitStack() as stack:

        def start(**env: str) -> tuple[Server, Server]:
            schema = "t_" + secrets.token_hex(6)
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
                connection.execute(f"CREATE SCHEMA {schema}")
            schemas.append(schema)
            shared = {
                "DATABASE_URL": f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}",
                "REDIS_URL": redis_url,
                **ROOMY_LIMITS,
                **env,
            }
            tmp_path = tmp_path_factory.mktemp("pair")
            return tuple(
                stack.enter_context(production(tmp_path, shared, workers=WORKERS)) for _ in range(2)
            )

        try:
            yield start
        finally:
            stack.close()
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
                for schema in schemas:
                    connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def admin_secret() -> str:
    return crypto.generate_secret()


@pytest.fixture(scope="module")
def pair(start_pair, admin_secret) -> tuple[Server, Server]:
    """Two instances with limits too high to matter."""
    return start_pair(APIKEYS_BOOTSTRAP_KEY=admin_secret)


def create(server: Server, admin: str, name: str) -> Reply:
    return server.request(
        "POST",
        KEYS,
        {**bearer(admin), "Content-Type": "application/json"},
        json.dumps({"name": name, "scopes": ["read:billing"]}).encode(),
    )


def until_every_worker_served(
    servers: list[Server], send: Callable[[Server], Reply], cap: int = MAX_REQUESTS
) -> tuple[list[Reply], dict[int, set[int]]]:
    """Rounds of ``send`` spread evenly over ``servers`` until each of their workers has
    answered at least once (or ``cap`` requests): the replies, and each server's workers."""
    replies: list[Reply] = []
    workers: dict[int, set[int]] = {server.port: set() for server in servers}
    targets = [servers[n % len(servers)] for n in range(ROUND)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        while any(len(pids) < WORKERS for pids in workers.values()) and len(replies) < cap:
            batch = list(pool.map(send, targets))
            replies += batch
            for server in servers:
                mine = [
                    reply for reply, target in zip(batch, targets, strict=True) if target is server
                ]
                workers[server.port] |= set(server.workers_of(mine).values())
    return replies, workers


def test_a_key_revoked_through_one_instance_is_refused_by_the_other_at_once(pair, admin_secret):
    a, b = pair
    created = create(a, admin_secret, "sidecar")
    assert created.status == 201, created.body
    key = json.loads(created.body)
    check = {**bearer(key["key"]), "X-Required-Scope": "read:billing"}

    # Both of B's workers have verified the key (whatever either might remember of it).
    before, workers = until_every_worker_served([b], lambda s: s.request("GET", CHECK, check))
    assert len(workers[b.port]) == WORKERS, f"only workers {workers} answered:\n{b.log()}"
    assert {reply.status for reply in before} == {200}

    assert a.request("DELETE", f"{KEYS}/{key['id']}", bearer(admin_secret)).status == 204

    very_next = b.request("GET", CHECK, check)
    assert very_next.status == 401, very_next.body
    after, workers = until_every_worker_served([b], lambda s: s.request("GET", CHECK, check))
    assert len(workers[b.port]) == WORKERS, f"only workers {workers} answered:\n{b.log()}"
    assert [reply.status for reply in after] == [401] * len(after)
    # And by A, and through the API as well as the check.
    assert a.request("GET", KEYS, bearer(key["key"])).status == 401
    assert b.request("GET", f"{KEYS}/{key['id']}", bearer(admin_secret)).status == 404


def test_concurrent_creates_of_one_name_across_instances_make_one_key(pair, admin_secret):
    a, b = pair
    attempts = 16
    released = threading.Barrier(attempts)

    def attempt(server: Server) -> Reply:
        released.wait(timeout=30)
        return create(server, admin_secret, "one-name")

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        replies = list(pool.map(attempt, [a, b] * (attempts // 2)))

    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] + [400] * (attempts - 1), [r.body for r in replies]
    refused = [json.loads(reply.body) for reply in replies if reply.status == 400]
    assert {body["error"]["code"] for body in refused} == {"name_taken"}
    listed = json.loads(b.request("GET", KEYS, bearer(admin_secret)).body)["data"]
    assert [key["name"] for key in listed].count("one-name") == 1


def test_a_rate_limit_is_one_budget_across_instances_and_workers(start_pair):
    admin = crypto.generate_secret()
    a, b = start_pair(APIKEYS_BOOTSTRAP_KEY=admin, RATE_LIMIT_PER_KEY=f"{BUDGET}/minute")

    turns = itertools.count()
    check = {**bearer(admin), "X-Required-Scope": "read:billing"}

    # The check (from leases) and the API (a unit at a time) spend the same budget.
    def spend(server: Server) -> Reply:
        if next(turns) % 3:
            return server.request("GET", CHECK, check)
        return server.request("GET", KEYS, bearer(admin))

    replies, workers = until_every_worker_served([a, b], spend, cap=MAX_REQUESTS)
    # Every worker of both instances answered, and more than the budget was asked for.
    assert all(len(pids) == WORKERS for pids in workers.values()), workers
    if len(replies) <= BUDGET:
        replies += [spend(server) for server in (a, b) * BUDGET]

    admitted = [reply for reply in replies if reply.status == 200]
    refused = [reply for reply in replies if reply.status != 200]
    assert len(admitted) == BUDGET
    assert {reply.status for reply in refused} == {429}
    for reply in refused:
        assert json.loads(reply.body)["error"]["code"] == "rate_limited"
        assert int(reply.headers["Retry-After"]) >= 1
        assert reply.headers["RateLimit-Limit"] == str(BUDGET)
        assert reply.headers["RateLimit-Remaining"] == "0"
