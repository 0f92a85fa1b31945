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
    key = storage.prefixed_key(leases.counter_name(item, *caller))
    return int(storage.get_connection().hget(key, "current") or 0)


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
    # A window just opened frees its first unit in 60 s; a stalled machine may eat a few.
    assert all(50 <= window.reset <= 60 for window in windows)
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


# The budget script on its own: one hash per budget, on Redis's clock.


@pytest.fixture
def budget(storage, caller):
    """Take units of a 10/minute budget straight through the script: (granted, remaining,
    ms until a unit frees, ms until the window ends), and the hash it keeps."""
    item = parse("10/minute")
    key = storage.prefixed_key(leases.counter_name(item, *caller))
    take = storage.get_connection().register_script(leases.BUDGET_SCRIPT)

    def spend(wanted: int = 1) -> list[int]:
        return take([key], [item.amount, 60_000, wanted])

    return spend, key


def redis_now(connection) -> int:
    seconds, micros = connection.time()
    return seconds * 1000 + micros // 1000


def test_the_script_opens_a_window_at_the_first_unit(storage, budget):
    spend, key = budget
    connection = storage.get_connection()
    before = redis_now(connection)
    granted, remaining, frees, left = spend(4)
    assert (granted, remaining) == (4, 6)
    assert 59_000 <= frees == left <= 60_000
    state = connection.hgetall(key)
    assert before <= int(state[b"start"]) <= redis_now(connection)
    assert (state[b"current"], state[b"previous"]) == (b"4", b"0")
    # Kept for as long as it counts: this window, then the next, where it weighs in.
    assert 119_000 <= connection.pttl(key) <= 120_000


def test_the_script_takes_one_unit_when_fewer_than_wanted_remain_and_none_when_none(
    storage, budget
):
    spend, key = budget
    assert spend(8)[:2] == [8, 2]
    assert spend(8)[:2] == [1, 1]
    assert spend(8)[:2] == [1, 0]
    before = storage.get_connection().hgetall(key)
    granted, remaining, frees, _ = spend(1)
    assert (granted, remaining) == (0, 0)
    assert 59_000 <= frees <= 60_000
    assert storage.get_connection().hgetall(key) == before  # a refusal writes nothing


def test_the_previous_window_weighs_in_as_much_as_it_is_still_covered(storage, budget):
    spend, key = budget
    connection = storage.get_connection()
    # A window that started a window and a half ago, with 8 units: now half of it counts.
    connection.hset(key, mapping={"start": redis_now(connection) - 90_000, "current": 8})
    granted, remaining, frees, left = spend()
    assert granted == 1
    assert 29_000 <= left <= 30_000
    assert remaining in (10 - 4 - 1, 10 - 3 - 1)  # 8 x (left / 60 s), floored
    state = connection.hgetall(key)
    assert (state[b"previous"], state[b"current"]) == (b"8", b"1")
    # The weighted count drops by one every 60 s / 8 = 7.5 s.
    assert 0 <= frees <= 7_500


def test_the_script_forgets_a_window_older_than_two(storage, budget):
    spend, key = budget
    connection = storage.get_connection()
    connection.hset(key, mapping={"start": redis_now(connection) - 120_001, "current": 10})
    assert spend(3)[:2] == [3, 7]
    state = connection.hgetall(key)
    assert (state[b"previous"], state[b"current"]) == (b"0", b"3")
