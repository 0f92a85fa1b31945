"""Leases of rate-limit budgets (the check's hot path), on the real Redis.

Each LeasedLimiter stands for one worker: two of them on one Redis are two workers.
"""

from __future__ import annotations

import logging
import secrets
import threading

import pytest
from limits import parse
from limits.storage import MemoryStorage, storage_from_string

from apikeys import leases
from apikeys.leases import LeasedLimiter
from tests.conftest import REDIS_URL, bearer
from tests.servers import redis_server

CHECK = "/api/v1/auth/check"


@pytest.fixture
def storage(redis_client, redis_prefix):
    """flask-limiter's storage, as it builds it from REDIS_URL, under the test's own prefix
    (whose keys ``redis_client`` deletes afterwards)."""
    return storage_from_string(REDIS_URL, key_prefix=redis_prefix)


@pytest.fixture
def caller():
    return ("key/" + secrets.token_hex(4), "caller")


def counted(storage, item, caller) -> int:
    """The units Redis counts in the current window."""
    return storage.get_sliding_window(item.key_for(*caller), item.get_expiry())[2]


def spend_until_refused(workers, item, caller, most=10_000) -> int:
    """Spend from the workers in turn until every one is refused; how many were allowed."""
    allowed = refused_in_a_row = 0
    for attempt in range(most):
        if workers[attempt % len(workers)].spend(item, *caller).allowed:
            allowed += 1
            refused_in_a_row = 0
        else:
            refused_in_a_row += 1
            if refused_in_a_row == len(workers):
                return allowed
    raise AssertionError("never refused")


def test_units_a_worker_leaves_unspent_are_lost_never_given_twice(storage, caller):
    item = parse("1600/minute")
    first, second = LeasedLimiter(storage), LeasedLimiter(storage)
    first.spend(item, *caller)  # leases 100, spends 1
    allowed = 1 + spend_until_refused([second], item, caller)
    assert allowed == 1600 - 99
    assert counted(storage, item, caller) == 1600


def test_a_large_budget_is_spent_from_one_lease(storage, caller):
    item = parse("1600/minute")  # a lease is a sixteenth of it: 100 units
    worker = LeasedLimiter(storage)
    windows = [worker.spend(item, *caller) for _ in range(100)]
    assert all(window.allowed for window in windows)
    assert counted(storage, item, caller) == 100
    assert [window.remaining for window in windows] == list(range(1599, 1499, -1))
    assert all(59 <= window.reset <= 60 for window in windows)
    # The lease spent, the next request takes another: a sixteenth of what remains.
    worker.spend(item, *caller)
    assert counted(storage, item, caller) == 100 + 1500 // 16


def test_a_small_budget_is_spent_one_unit_per_round_trip(storage, caller):
    item = parse("3/minute")
    worker = LeasedLimiter(storage)
    for remaining in (2, 1, 0):
        window = worker.spend(item, *caller)
        assert (window.allowed, window.remaining) == (True, remaining)
        assert counted(storage, item, caller) == 3 - remaining
    refused = worker.spend(item, *caller)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert dict(refused.headers())["RateLimit-Limit"] == "3"
    assert 1 <= int(dict(refused.headers())["Retry-After"]) <= 60
    assert counted(storage, item, caller) == 3


@pytest.mark.parametrize("amount", [5, 64, 1000, 5000])
@pytest.mark.parametrize("workers", [2, 8])
def test_workers_never_admit_more_than_the_limit_and_waste_little(storage, amount, workers):
    item = parse(f"{amount}/minute")
    caller = ("key/" + secrets.token_hex(4), "caller")
    allowed = spend_until_refused([LeasedLimiter(storage) for _ in range(workers)], item, caller)
    assert allowed <= amount
    # Every unit leased is spent here, as every worker goes on until refused.
    assert allowed == amount
    assert counted(storage, item, caller) == amount


@pytest.fixture
def generous(settings):
    settings["RATE_LIMIT_PER_KEY"] = "1600/minute"


def test_workers_share_the_budget_with_flask_limiter(generous, client, admin):
    """A key's checks and its API requests spend one budget (see also test_check.py)."""
    checked = [
        client.get(CHECK, headers={**bearer(admin.key), "X-Required-Scope": "read:api_keys"})
        for _ in range(3)
    ]
    assert [int(response.headers["RateLimit-Remaining"]) for response in checked] == [
        1599,
        1598,
        1597,
    ]
    # The API's request finds the 100 units the check leased already counted.
    listed = client.get("/api/v1/org/api-keys", headers=bearer(admin.key))
    assert int(listed.headers["RateLimit-Remaining"]) == 1600 - 100 - 1


class Clock:
    """The limiter's clock, moved by the test: Redis's own time goes on as it does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_lapses_when_the_window_rolls_over(storage, caller):
    item = parse("1600/minute")
    clock = Clock()
    worker = LeasedLimiter(storage, clock=clock)
    worker.spend(item, *caller)
    assert counted(storage, item, caller) == 100
    clock.now += 59
    worker.spend(item, *caller)  # from the lease
    assert counted(storage, item, caller) == 100
    clock.now += 2  # past the end of Redis's window: its units are not to be spent now
    worker.spend(item, *caller)
    # Redis's own clock has not moved: its window holds both leases.
    assert counted(storage, item, caller) == 100 + 1500 // 16


def test_leases_kept_are_bounded(storage, monkeypatch):
    monkeypatch.setattr(leases, "LEASES_KEPT", 10)
    item = parse("1600/minute")
    worker = LeasedLimiter(storage)
    callers = [("key/" + secrets.token_hex(4), "caller") for _ in range(25)]
    for caller in callers:
        worker.spend(item, *caller)
    assert len(worker.held()) == 10
    # The oldest are dropped with their units: spending again takes a new lease.
    worker.spend(item, *callers[0])
    assert counted(storage, item, callers[0]) == 200


def test_without_redis_budgets_are_counted_in_memory(tmp_path, caller, caplog):
    item = parse("3/minute")
    with redis_server(tmp_path) as (server, url):
        worker = LeasedLimiter(storage_from_string(url, socket_timeout=0.5))
        assert worker.spend(item, *caller).remaining == 2
        server.kill()
        server.wait()
        with caplog.at_level(logging.WARNING):
            windows = [worker.spend(item, *caller) for _ in range(4)]
    # Memory starts afresh, and still limits.
    assert [window.allowed for window in windows] == [True, True, True, False]
    assert [window.remaining for window in windows] == [2, 1, 0, 0]
    warnings = [r for r in caplog.records if "falling back to in-memory" in r.getMessage()]
    assert len(warnings) == 1


def test_redis_is_tried_again_every_few_seconds_and_used_when_back(tmp_path, caller, caplog):
    item = parse("1000/minute")
    clock = Clock()
    with redis_server(tmp_path) as (server, url):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        worker = LeasedLimiter(storage_from_string(url, socket_timeout=0.5), clock=clock)
        server.kill()
        server.wait()
        assert worker.spend(item, *caller).allowed  # in memory
        with redis_server(tmp_path, port=port) as (_, again):
            assert again == url
            back = storage_from_string(url)
            clock.now += leases.RETRY_SECONDS - 0.5
            assert worker.spend(item, *caller).allowed
            assert counted(back, item, caller) == 0  # not asked again yet
            clock.now += 1
            with caplog.at_level(logging.INFO):
                window = worker.spend(item, *caller)
            assert counted(back, item, caller) == 1000 // 16
    assert window.remaining == 1000 - 1
    assert any("recovered" in record.getMessage() for record in caplog.records)


def test_without_redis_configured_every_unit_is_counted_as_spent(caller):
    memory = MemoryStorage()
    worker = LeasedLimiter(memory)
    item = parse("1600/minute")
    assert [worker.spend(item, *caller).remaining for _ in range(3)] == [1599, 1598, 1597]
    assert memory.get_sliding_window(item.key_for(*caller), 60)[2] == 3


def test_threads_of_one_worker_never_spend_a_unit_twice(storage, caller):
    item = parse("3000/minute")
    worker = LeasedLimiter(storage)
    outcomes = []

    def spend(count):
        outcomes.extend(worker.spend(item, *caller).allowed for _ in range(count))

    threads = [threading.Thread(target=spend, args=(500,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 4000
    assert outcomes.count(True) == 3000 - sum(worker.held().values())
    assert counted(storage, item, caller) == 3000
