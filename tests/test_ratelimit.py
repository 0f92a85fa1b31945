"""Rate limits on the real Redis: per key, per address on failed authentication, without Redis."""

from __future__ import annotations

import logging
import signal
import threading
import time

import pytest
from peewee import OperationalError

from apikeys import config, crypto, db
from app import create_app
from tests.conftest import bearer, prepared
from tests.servers import free_port

URL = "/api/v1/org/api-keys"
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def settings(settings):
    settings["RATE_LIMIT_PER_KEY"] = "3/minute"
    settings["RATE_LIMIT_FAILED_AUTH"] = "2/minute"
    return settings


def assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.json
    assert response.json["error"]["code"] == "rate_limited"
    assert set(response.json) == {"error"}
    assert set(response.json["error"]) == {"code", "message"}
    assert response.json["error"]["message"]
    assert response.headers["Content-Type"] == "application/json"
    retry_after = int(response.headers["Retry-After"])
    assert 0 <= retry_after <= 61
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 0 <= int(response.headers["RateLimit-Reset"]) <= 61


def assert_rate_headers(response, limit: int, remaining: int) -> None:
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == str(remaining)
    assert 0 <= int(response.headers["RateLimit-Reset"]) <= 61


def test_per_key_limit(client, admin):
    for remaining in (2, 1, 0):
        response = client.get(URL, headers=bearer(admin.key))
        assert response.status_code == 200
        assert_rate_headers(response, 3, remaining)
        assert "Retry-After" not in response.headers
    response = client.get(URL, headers=bearer(admin.key))
    assert_rate_limited(response)
    assert response.headers["RateLimit-Limit"] == "3"
    # Still limited whichever header carries the key, and on every guarded route.
    assert_rate_limited(client.get(URL, headers={"X-API-Key": admin.key}))
    assert_rate_limited(client.get(f"{URL}/{admin.id}", headers=bearer(admin.key)))


def test_limit_is_counted_in_redis(client, admin, redis_client, redis_prefix):
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    assert list(redis_client.scan_iter(f"*{redis_prefix}*"))


@pytest.fixture
def generous(settings):
    settings["RATE_LIMIT_PER_KEY"] = "100/minute"
    return settings


def test_every_authenticated_response_carries_the_headers(generous, client, admin, make_key):
    reader = make_key(name="reader", key_scopes=["read:api_keys"])
    created = client.post(
        URL, headers=bearer(admin.key), json={"name": "new", "scopes": ["read:billing"]}
    )
    responses = {
        201: created,
        200: client.get(URL, headers=bearer(admin.key)),
        204: client.delete(f"{URL}/{created.json['id']}", headers=bearer(admin.key)),
        404: client.get(f"{URL}/key_doesnotexist", headers=bearer(admin.key)),
        400: client.post(URL, headers=bearer(admin.key), json={"name": ""}),
        403: client.post(
            URL, headers=bearer(reader.key), json={"name": "n", "scopes": ["read:billing"]}
        ),
    }
    for status, response in responses.items():
        assert response.status_code == status, response.json
        for header in RATE_HEADERS:
            assert header in response.headers, (status, header)
        assert response.headers["RateLimit-Limit"] == "100"
        assert "Retry-After" not in response.headers, status
    # One budget per key across every guarded route and method: admin made 5 requests.
    assert responses[400].headers["RateLimit-Remaining"] == "95"
    assert responses[403].headers["RateLimit-Remaining"] == "99"


@pytest.mark.parametrize(("limit", "window"), [("3/minute", 60), ("3/hour", 3600)])
def test_reset_is_seconds_from_now(settings, request, limit, window):
    settings["RATE_LIMIT_PER_KEY"] = limit
    client, admin = request.getfixturevalue("client"), request.getfixturevalue("admin")
    response = client.get(URL, headers=bearer(admin.key))
    reset = int(response.headers["RateLimit-Reset"])
    # A Unix time would be about 1.7e9; seconds from now lie within the window. (limits
    # reports a window opened in this very millisecond as resetting at once, as its TTL is
    # then exactly two windows; flask-limiter adds its one second.)
    assert reset == 1 or window - 5 <= reset <= window + 1
    for _ in range(3):
        response = client.get(URL, headers=bearer(admin.key))
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= window + 1
    assert int(response.headers["RateLimit-Reset"]) <= window + 1


def test_keys_have_separate_budgets(client, admin, make_key):
    other = make_key(name="other")
    for _ in range(3):
        assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    assert_rate_limited(client.get(URL, headers=bearer(admin.key)))
    response = client.get(URL, headers=bearer(other.key))
    assert response.status_code == 200
    assert_rate_headers(response, 3, 2)


def test_keys_of_different_organizations_have_separate_budgets(client, admin, make_key, other_org):
    other = make_key(name="admin", organization=other_org)
    for _ in range(3):
        assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    assert_rate_limited(client.get(URL, headers=bearer(admin.key)))
    assert client.get(URL, headers=bearer(other.key)).status_code == 200


def test_failed_authentication_is_limited_per_address(client, admin):
    attempts = [
        {},
        bearer("evk_guess"),
        bearer(crypto.generate_secret()),
    ]
    assert client.get(URL, headers=attempts[0]).status_code == 401
    assert client.get(URL, headers=attempts[1]).status_code == 401
    limited = client.get(URL, headers=attempts[2])
    assert_rate_limited(limited)
    assert limited.headers["RateLimit-Limit"] == "2"
    # A valid key from the same address is still served, from its own budget.
    served = client.get(URL, headers=bearer(admin.key))
    assert served.status_code == 200
    assert_rate_headers(served, 3, 2)
    # Another address has its own failed-authentication budget.
    elsewhere = client.get(URL, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert elsewhere.status_code == 401


@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_trusted_proxies_the_forwarded_address_counts(settings, proxies):
    settings["APIKEYS_TRUSTED_PROXIES"] = proxies
    client = prepared(create_app(settings)).test_client()
    for client_address in ("198.51.100.1", "198.51.100.1", "198.51.100.2"):
        response = client.get(URL, headers={"X-Forwarded-For": client_address})
    # Trusted: two clients behind one proxy have a budget each; untrusted: one, the proxy's.
    assert response.status_code == (401 if proxies else 429)


def test_failed_401_carries_the_rate_headers(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert_rate_headers(response, 2, 1)
    assert "Retry-After" not in response.headers


def test_successful_requests_do_not_spend_the_failed_budget(client, admin):
    assert client.get(URL).status_code == 401
    for _ in range(3):
        assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    assert client.get(URL).status_code == 401
    assert_rate_limited(client.get(URL))


def test_failed_attempts_do_not_spend_a_keys_budget(client, admin):
    # A revoked or mistyped copy of a key must not let anyone drain the real key's budget.
    typo = admin.key[:-1] + ("A" if admin.key[-1] != "A" else "B")
    assert client.get(URL, headers=bearer(typo)).status_code == 401
    assert client.get(URL, headers=bearer(typo)).status_code == 401
    response = client.get(URL, headers=bearer(admin.key))
    assert_rate_headers(response, 3, 2)


def test_limits_hold_across_instances(app, settings, admin, redis_client, redis_prefix):
    first, second = app.test_client(), create_app(dict(settings)).test_client()
    assert first.get(URL, headers=bearer(admin.key)).status_code == 200
    assert second.get(URL, headers=bearer(admin.key)).status_code == 200
    response = first.get(URL, headers=bearer(admin.key))
    assert_rate_headers(response, 3, 0)
    assert_rate_limited(second.get(URL, headers=bearer(admin.key)))
    assert_rate_limited(first.get(URL, headers=bearer(admin.key)))
    # The failed-authentication budget is shared too.
    assert first.get(URL).status_code == 401
    assert second.get(URL).status_code == 401
    assert_rate_limited(first.get(URL))


def test_instances_with_other_prefixes_do_not_share(app, settings, admin):
    first = app.test_client()
    second = create_app({**settings, "RATELIMIT_KEY_PREFIX": "other-" + crypto.new_id("t")})
    for _ in range(3):
        assert first.get(URL, headers=bearer(admin.key)).status_code == 200
    assert_rate_limited(first.get(URL, headers=bearer(admin.key)))
    assert second.test_client().get(URL, headers=bearer(admin.key)).status_code == 200


def test_the_prefix_is_read_from_the_environment_and_empty_by_default():
    assert config.from_environment({})["RATELIMIT_KEY_PREFIX"] == ""
    assert config.from_environment({"RATELIMIT_KEY_PREFIX": "eu-1"})["RATELIMIT_KEY_PREFIX"] == (
        "eu-1"
    )


def test_deployments_on_one_redis_keep_their_budgets_apart_by_the_prefix_in_their_environment(
    settings, admin, redis_client, redis_prefix, monkeypatch
):
    # Two deployments on one Redis database (and, here, one database of keys too), each
    # told its prefix by its environment alone.
    shared = {name: value for name, value in settings.items() if name != "RATELIMIT_KEY_PREFIX"}

    def deployment(prefix: str):
        monkeypatch.setenv("RATELIMIT_KEY_PREFIX", prefix)
        return create_app(shared).test_client()

    first, second = deployment(f"{redis_prefix}-a"), deployment(f"{redis_prefix}-b")
    first_again = deployment(f"{redis_prefix}-a")
    for _ in range(3):
        assert first.get(URL, headers=bearer(admin.key)).status_code == 200
    assert_rate_limited(first.get(URL, headers=bearer(admin.key)))

    assert second.get(URL, headers=bearer(admin.key)).status_code == 200
    assert_rate_limited(first_again.get(URL, headers=bearer(admin.key)))  # the same budget
    names = {name.decode() for name in redis_client.scan_iter(f"*{redis_prefix}*")}
    assert any(f"{redis_prefix}-a/" in name for name in names), names
    assert any(f"{redis_prefix}-b/" in name for name in names), names


# Without Redis


def test_redis_going_away_falls_back_in_process(own_redis, client, admin, make_key, caplog):
    other = make_key(name="other")
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    own_redis.kill()
    own_redis.wait()
    with caplog.at_level(logging.WARNING):
        served = client.get(URL, headers=bearer(other.key))
        refused = client.get(URL)
    assert served.status_code == 200
    assert_rate_headers(served, 3, 2)
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "unauthorized"
    assert any("falling back to in-memory" in record.getMessage() for record in caplog.records)
    # The in-process fallback still limits.
    for _ in range(2):
        assert client.get(URL, headers=bearer(other.key)).status_code == 200
    assert_rate_limited(client.get(URL, headers=bearer(other.key)))
    assert client.get(URL).status_code == 401
    assert_rate_limited(client.get(URL))


def test_without_redis_the_check_and_the_routes_still_spend_one_budget(own_redis, client, admin):
    check = {**bearer(admin.key), "X-Required-Scope": "read:api_keys"}
    own_redis.kill()
    own_redis.wait()
    assert client.get("/api/v1/auth/check", headers=check).status_code == 200
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    assert client.get("/api/v1/auth/check", headers=check).status_code == 200
    assert_rate_limited(client.get(URL, headers=bearer(admin.key)))
    assert_rate_limited(client.get("/api/v1/auth/check", headers=check))


def test_redis_hanging_falls_back_in_process(own_redis, client, admin, caplog):
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    # Stopped, not dead: connections hang until the storage's socket timeout.
    own_redis.send_signal(signal.SIGSTOP)
    with caplog.at_level(logging.WARNING):
        served = client.get(URL, headers=bearer(admin.key))
        refused = client.get(URL, headers=bearer(crypto.generate_secret()))
    assert served.status_code == 200
    assert set(RATE_HEADERS) <= set(served.headers.keys())
    assert refused.status_code == 401
    assert any("falling back to in-memory" in record.getMessage() for record in caplog.records)


def test_redis_unreachable_from_the_start(settings, request, caplog):
    settings["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING):
        client, admin = request.getfixturevalue("client"), request.getfixturevalue("admin")
        responses = [client.get(URL, headers=bearer(admin.key)) for _ in range(4)]
        refused = client.get(URL)
    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert refused.status_code == 401
    assert any("falling back to in-memory" in record.getMessage() for record in caplog.records)


def test_database_error_is_not_taken_for_redis_down(client, admin, monkeypatch, caplog):
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200

    def gone(sql, params=None):
        raise OperationalError("the database is gone")

    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(db.database.obj, "execute_sql", gone)
        failed = client.get(URL, headers=bearer(admin.key))
    assert failed.status_code in (500, 503)
    assert failed.json["error"]["code"] in ("internal_error", "service_unavailable")
    assert not [record for record in caplog.records if record.name == "flask-limiter"]
    # The limiter still counts in Redis, where the first request left its mark.
    assert_rate_headers(client.get(URL, headers=bearer(admin.key)), 3, 1)


# Without REDIS_URL


@pytest.fixture
def in_memory(settings):
    settings["REDIS_URL"] = None
    return settings


def test_in_memory_default_still_limits(in_memory, client, admin, redis_client, redis_prefix):
    for remaining in (2, 1, 0):
        response = client.get(URL, headers=bearer(admin.key))
        assert response.status_code == 200
        assert_rate_headers(response, 3, remaining)
    assert_rate_limited(client.get(URL, headers=bearer(admin.key)))
    assert client.get(URL).status_code == 401
    assert client.get(URL).status_code == 401
    assert_rate_limited(client.get(URL))
    assert list(redis_client.scan_iter(f"*{redis_prefix}*")) == []


def test_preflights_do_not_spend_the_failed_budget(client, admin):
    for _ in range(5):
        assert client.options(URL).status_code == 204
    assert client.get(URL).status_code == 401
    # The check answers OPTIONS itself, as a check: that one is limited like any other.
    for _ in range(2):
        client.options("/api/v1/auth/check")
    assert_rate_limited(client.options("/api/v1/auth/check"))


def test_unlimited_routes_neither_spend_nor_show_a_budget(client, admin):
    # The limiter's hooks run on the guarded and leased blueprints only.
    for _ in range(5):
        response = client.get("/healthz", headers=bearer(admin.key))
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers
    assert_rate_headers(client.get(URL, headers=bearer(admin.key)), 3, 2)


def test_redis_timeouts_hold_under_the_operators_storage_options(own_redis, settings):
    # Options of the operator's own once replaced the timeouts: a paused Redis then held
    # every request for as long as it stayed paused.
    settings["RATELIMIT_STORAGE_OPTIONS"] = {"client_name": "apikeys"}
    client = create_app(settings).test_client()
    own_redis.send_signal(signal.SIGSTOP)
    answered = []
    request = threading.Thread(target=lambda: answered.append(client.get(URL)), daemon=True)
    started = time.monotonic()
    request.start()
    request.join(timeout=5)
    own_redis.send_signal(signal.SIGCONT)
    assert answered, "still waiting on the paused Redis after 5 s"
    assert answered[0].status_code == 401
    assert time.monotonic() - started < 1.5
