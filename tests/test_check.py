"""/api/v1/auth/check: what a reverse proxy or a backend hears for each request it forwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apikeys import crypto
from apikeys.config import ConfigError
from apikeys.models import ApiKey
from apikeys.policy import METHODS
from app import create_app
from schemas.check import CheckSchema
from tests.conftest import bearer

CHECK = "/api/v1/auth/check"
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Missing or invalid API key"}}


def nginx(method: str, uri: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri}


def traefik(method: str, uri: str) -> dict[str, str]:
    return {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri}


@pytest.fixture(autouse=True)
def no_policy_file_from_the_environment(monkeypatch):
    monkeypatch.delenv("APIKEYS_POLICY_FILE", raising=False)


@pytest.fixture
def check(client):
    """Send a check with ``secret`` and the target headers; any method, GET by default."""

    def send(secret, method="GET", **target):
        headers = {**(bearer(secret) if secret else {}), **target.pop("headers", {})}
        return client.open(CHECK, method=method, headers=headers)

    return send


@pytest.fixture
def reader(make_key):
    """A key that can read charge points and billing, and nothing else."""
    return make_key(key_scopes=["read:charge_points", "read:billing"])


# Each header convention.


@pytest.mark.both_databases
@pytest.mark.parametrize(
    "target",
    [
        {"X-Required-Scope": "read:billing"},
        nginx("GET", "/api/v1/billing/invoices?page=2"),
        traefik("GET", "/api/v1/billing/invoices?page=2"),
    ],
    ids=["required-scope", "nginx", "traefik"],
)
def test_a_key_holding_the_scope_passes_with_who_it_is(check, org, reader, target):
    response = check(reader.key, headers=target)
    assert response.status_code == 200
    assert response.json == {
        "org_id": org.id,
        "key_id": reader.id,
        "scopes": ["read:charge_points", "read:billing"],
    }
    assert response.headers["X-Auth-Org-Id"] == org.id
    assert response.headers["X-Auth-Key-Id"] == reader.id
    assert response.headers["X-Auth-Scopes"] == "read:charge_points read:billing"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"] == "application/json"
    # The view skips the schema on the hot path; what it writes is what the schema says.
    assert CheckSchema().dump(response.json) == response.json
    assert CheckSchema().load(response.json) == response.json


def test_each_key_hears_its_own_answer(check, org, other_org, reader, make_key):
    # The answer is rendered once per key and kept: checks of several keys, interleaved,
    # must never hear another key's.
    other = make_key(key_scopes=["read:billing"], organization=other_org)
    expected = {
        reader.key: (org.id, reader.id, "read:charge_points read:billing"),
        other.key: (other_org.id, other.id, "read:billing"),
    }
    for secret in [reader.key, other.key] * 3:
        response = check(secret, headers={"X-Required-Scope": "read:billing"})
        assert response.status_code == 200
        org_id, key_id, scopes = expected[secret]
        assert response.json == {"org_id": org_id, "key_id": key_id, "scopes": scopes.split()}
        assert response.headers["X-Auth-Org-Id"] == org_id
        assert response.headers["X-Auth-Key-Id"] == key_id
        assert response.headers["X-Auth-Scopes"] == scopes


@pytest.mark.parametrize("method", METHODS)
def test_the_check_answers_any_method(check, reader, method):
    target = nginx("DELETE", "/api/v1/billing/1")
    assert (
        check(reader.key, method=method, headers={"X-Required-Scope": "read:billing"}).status_code
        == 200
    )
    assert check(reader.key, method=method, headers=target).status_code == 403
    assert check(None, method=method, headers=target).status_code == 401


def test_the_key_may_come_in_x_api_key_or_both_headers_if_they_agree(client, reader):
    target = {"X-Required-Scope": "read:billing"}
    assert client.get(CHECK, headers={"X-API-Key": reader.key, **target}).status_code == 200
    both = {**bearer(reader.key), "X-API-Key": reader.key, **target}
    assert client.get(CHECK, headers=both).status_code == 200
    other = crypto.generate_secret()
    different = {**bearer(reader.key), "X-API-Key": other, **target}
    assert client.get(CHECK, headers=different).status_code == 401


# Each policy outcome.


@pytest.mark.parametrize(
    ("target", "scope"),
    [
        ({"X-Required-Scope": "write:billing"}, "write:billing"),
        (nginx("POST", "/api/v1/charge_points"), "write:charge_points"),
        (traefik("GET", "/api/v1/sessions/s_1"), "read:sessions"),
        (nginx("GET", "/api/v1/webhooks"), "write:webhooks"),
        (traefik("DELETE", "/api/v1/org/api-keys/key_1"), "write:api_keys"),
    ],
)
def test_a_key_lacking_the_scope_is_forbidden_and_told_which(check, reader, target, scope):
    response = check(reader.key, headers=target)
    assert response.status_code == 403
    assert response.json == {
        "error": {"code": "forbidden", "message": f"Your key lacks the required scope {scope}"}
    }
    assert "X-Auth-Key-Id" not in response.headers


@pytest.mark.parametrize(
    "target",
    [
        nginx("GET", "/api/v1/unknown"),
        traefik("GET", "/"),
        nginx("POST", "/api/v1/analytics/report"),  # analytics has no write scope
        traefik("PUT", "/api/v1/sessions/s_1"),  # nor have sessions
        nginx("TRACE", "/api/v1/billing"),
        traefik("get", "/api/v1/billing"),
        nginx("GET", "/API/V1/BILLING"),
        nginx("GET", "/api/v1/auth/check"),
    ],
)
def test_a_route_the_policy_does_not_know_is_forbidden_even_to_an_all_scopes_key(
    check, admin, target
):
    response = check(admin.key, headers=target)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "forbidden"


#: Request targets that read differently to different servers, and the check's answer for
#: a key that reads charge points and billing (tests/test_hostile_clients.py reuses them).
PATH_TRICKS = [
    ("/api/v1/charge_points/../billing", 403),
    ("/api/v1/billing/../charge_points/1", 403),
    ("/api/v1/charge_points/..;/billing", 403),
    ("/api/v1/charge_points/../sessions", 403),
    ("/api/v1/charge_points/%2e%2e/sessions", 403),
    ("//api//v1/charge_points//", 200),
    ("//api//v1//sessions", 403),
    ("/api/v1/charge_points%2F..%2Fsessions", 403),
    ("/api/v1/charge_points/%252e%252e/sessions", 403),
    ("/../api/v1/charge_points", 403),
    ("/api/v1/charge_points?next=/api/v1/sessions", 200),
    ("/api/v1/sessions?next=/api/v1/charge_points", 403),
    ("/?x=/api/v1/charge_points", 403),
    ("/api/v1/charge_points/\\..\\..\\sessions", 403),
    # A comma in the query is the query's own; in the path, or before what starts as
    # another URI, it may be two joined copies of the header.
    ("/api/v1/charge_points?ids=cp-1,cp-2&fields=a,b", 200),
    ("/api/v1/charge_points/cp-1,cp-2", 403),
    ("/api/v1/charge_points?x,/api/v1/sessions", 403),
    ("/api/v1/charge_points?next=a,http://h/api/v1/sessions", 403),
    ("/api/v1/charge_points?x, /api/v1/billing", 200),
]


@pytest.mark.parametrize(("uri", "status"), PATH_TRICKS)
@pytest.mark.parametrize("convention", [nginx, traefik])
def test_path_tricks_do_not_fool_the_policy(check, reader, uri, status, convention):
    assert check(reader.key, headers=convention("GET", uri)).status_code == status


def test_every_convention_present_must_pass_so_an_added_header_cannot_widen(check, reader):
    billing, sessions = nginx("GET", "/api/v1/billing"), traefik("GET", "/api/v1/sessions")
    assert (
        check(reader.key, headers={**billing, **traefik("GET", "/api/v1/billing")}).status_code
        == 200
    )
    # A client that adds a header for a route its key holds is still judged on the real one.
    assert check(reader.key, headers={**billing, **sessions}).status_code == 403
    assert (
        check(reader.key, headers={**sessions, "X-Required-Scope": "read:billing"}).status_code
        == 403
    )
    assert (
        check(reader.key, headers={**billing, "X-Required-Scope": "read:sessions"}).status_code
        == 403
    )
    unknown = nginx("GET", "/api/v1/unknown")
    assert (
        check(reader.key, headers={**unknown, "X-Required-Scope": "read:billing"}).status_code
        == 403
    )


# A check that says nothing to check: the proxy is misconfigured.


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({}, "Say what to check"),
        ({"X-Required-Scope": "  "}, "Say what to check"),
        ({"X-Original-Method": "GET"}, "X-Original-URI is missing"),
        ({"X-Original-URI": "/api/v1/billing"}, "X-Original-Method is missing"),
        ({"X-Forwarded-Uri": "/api/v1/billing"}, "X-Forwarded-Method is missing"),
        ({"X-Forwarded-Method": "GET", "X-Forwarded-Uri": ""}, "X-Forwarded-Uri is missing"),
        (
            {"X-Required-Scope": "read:billing", "X-Forwarded-Method": "GET"},
            "X-Forwarded-Uri is missing",
        ),
    ],
)
def test_a_check_without_a_complete_target_is_an_invalid_request(check, admin, target, message):
    response = check(admin.key, headers=target)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_request"
    assert message in response.json["error"]["message"]


@pytest.mark.parametrize(
    ("name", "status"),
    [("X-Required-Scope", 400), ("X-Original-Method", 403), ("X-Original-URI", 403)],
)
def test_a_target_header_sent_twice_fails_closed(client, reader, name, status):
    """WSGI joins a repeated header's values with commas: no joined value passes."""
    target = {
        "X-Required-Scope": "read:billing",
        "X-Original-Method": "GET",
        "X-Original-URI": "/api/v1/billing",
    }
    headers = [*bearer(reader.key).items(), *target.items(), (name, target[name])]
    assert client.get(CHECK, headers=headers).status_code == status


@pytest.mark.parametrize("scope", ["read:everything", "READ:BILLING", "read:billing write:billing"])
def test_an_unknown_required_scope_is_an_invalid_scope(check, admin, scope):
    response = check(admin.key, headers={"X-Required-Scope": scope})
    assert response.status_code == 400
    assert response.json == {
        "error": {"code": "invalid_scope", "message": f"Unrecognized scopes: {scope!r}"}
    }


def test_authentication_comes_before_the_target(check):
    assert check(None).status_code == 401
    assert check(None, headers={"X-Required-Scope": "read:nothing"}).status_code == 401


# Keys that do not authenticate: one answer for all.


def test_missing_malformed_and_unknown_keys_are_unauthorized(client, check):
    target = {"X-Required-Scope": "read:billing"}
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "evk_not-a-key"},
        bearer(crypto.generate_secret()),
        bearer(crypto.generate_secret()[:-1] + "x"),
    ):
        response = client.get(CHECK, headers={**headers, **target})
        assert response.status_code == 401
        assert response.json == UNAUTHORIZED
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_expired_key_is_unauthorized(check, make_key):
    key = make_key(key_scopes=["read:billing"], expires_in_days=1)
    target = {"X-Required-Scope": "read:billing"}
    assert check(key.key, headers=target).status_code == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1, seconds=1), tick=False):
        response = check(key.key, headers=target)
    assert response.status_code == 401
    assert response.json == UNAUTHORIZED


def test_a_revoked_key_is_unauthorized_on_the_next_check(client, check, admin, reader):
    target = {"X-Required-Scope": "read:billing"}
    assert check(reader.key, headers=target).status_code == 200
    revoked = client.delete(f"/api/v1/org/api-keys/{reader.id}", headers=bearer(admin.key))
    assert revoked.status_code == 204
    response = check(reader.key, headers=target)
    assert response.status_code == 401
    assert response.json == UNAUTHORIZED


# Rate limits: the check spends the key's one budget, like any authenticated request.


@pytest.fixture
def limited(settings):
    settings["RATE_LIMIT_PER_KEY"] = "3/minute"
    settings["RATE_LIMIT_FAILED_AUTH"] = "2/minute"
    return settings


def assert_rate_limited(response, limit):
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    # Seconds until the one-minute window ends, rounded up by flask-limiter.
    assert 0 < int(response.headers["RateLimit-Reset"]) <= 61


def test_the_per_key_limit_applies_and_is_shared_with_the_api(
    limited, client, check, admin, reader
):
    target = {"X-Required-Scope": "read:billing"}
    remaining = [check(reader.key, headers=target).headers["RateLimit-Remaining"] for _ in range(2)]
    assert remaining == ["2", "1"]
    assert client.get("/api/v1/org/api-keys", headers=bearer(reader.key)).status_code == 403
    assert_rate_limited(check(reader.key, headers=target), limit=3)
    # Another key of the same organization keeps its own budget.
    passed = check(admin.key, headers=target)
    assert passed.status_code == 200
    assert passed.headers["RateLimit-Remaining"] == "2"
    assert "Retry-After" not in passed.headers


def test_failed_checks_are_limited_per_client_address(limited, check, reader):
    target = {"X-Required-Scope": "read:billing"}
    unknown = crypto.generate_secret()
    assert [check(unknown, headers=target).status_code for _ in range(2)] == [401, 401]
    assert_rate_limited(check(unknown, headers=target), limit=2)
    assert check(reader.key, headers=target).status_code == 200


def test_every_error_repeats_its_body_in_x_auth_error(limited, check, reader):
    """nginx's auth_request drops a check's body: deploy/nginx.conf answers with this."""
    passed = check(reader.key, headers={"X-Required-Scope": "read:billing"})
    assert passed.status_code == 200
    assert "X-Auth-Error" not in passed.headers
    errors = [
        check(None, headers={"X-Required-Scope": "read:billing"}),
        check(reader.key, headers={"X-Required-Scope": "bogus"}),
        check(reader.key, headers=nginx("GET", "/no/such/route")),
    ]
    while errors[-1].status_code != 429 and len(errors) < 20:
        errors.append(check(reader.key, headers={"X-Required-Scope": "read:billing"}))
    assert [errors[i].status_code for i in (0, 1, 2, -1)] == [401, 400, 403, 429]
    for response in errors:
        assert response.headers["X-Auth-Error"] == response.get_data(as_text=True).strip()


# last_used_at: recorded by a check, at most one write per key per interval.


@pytest.fixture
def interval(settings):
    """The coalescing interval, set apart from the default so that the test proves it is read."""
    settings["LAST_USED_INTERVAL_SECONDS"] = 90
    return 90


def last_used_at(key):
    return ApiKey.get_by_id(key.id).last_used_at


@pytest.mark.both_databases
def test_a_check_records_last_use_coalesced_to_one_write_per_interval(interval, check, reader):
    target = {"X-Required-Scope": "read:billing"}
    start = datetime.now(UTC).replace(microsecond=0)
    naive = start.replace(tzinfo=None)
    assert last_used_at(reader) is None
    with time_machine.travel(start, tick=False) as clock:
        assert check(reader.key, headers=target).status_code == 200
        assert last_used_at(reader) == naive
        clock.shift(timedelta(seconds=interval - 1))
        assert check(reader.key, headers=target).status_code == 200
        assert last_used_at(reader) == naive
        clock.shift(timedelta(seconds=1))
        assert check(reader.key, headers=target).status_code == 200
        assert last_used_at(reader) == naive + timedelta(seconds=interval)


def test_a_check_denied_for_its_scope_still_records_use(check, reader):
    assert check(reader.key, headers={"X-Required-Scope": "write:billing"}).status_code == 403
    assert last_used_at(reader) is not None


def test_a_check_that_fails_authentication_records_nothing(check, reader, make_key):
    expired = make_key(key_scopes=["read:billing"], expires_in_days=1)
    with time_machine.travel(datetime.now(UTC) + timedelta(days=2), tick=False):
        assert check(expired.key, headers={"X-Required-Scope": "read:billing"}).status_code == 401
    assert last_used_at(expired) is None


# The policy file.


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.txt"
    path.write_text(
        "# Our own routes; the built-in ones no longer apply.\n"
        "GET,HEAD  /v2/stations/**      read:charge_points\n"
        "*         /v2/stations/*/reset write:charge_points\n"
    )
    return path


@pytest.fixture
def with_policy_file(settings, policy_file):
    settings["APIKEYS_POLICY_FILE"] = str(policy_file)


def test_a_policy_file_replaces_the_built_in_policy(with_policy_file, check, admin, make_key):
    reader = make_key(key_scopes=["read:charge_points"])
    assert check(reader.key, headers=nginx("GET", "/v2/stations/s_1")).status_code == 200
    assert check(reader.key, headers=nginx("POST", "/v2/stations/s_1/reset")).status_code == 403
    assert check(admin.key, headers=nginx("POST", "/v2/stations/s_1/reset")).status_code == 200
    assert check(admin.key, headers=nginx("POST", "/v2/stations/s_1")).status_code == 403
    assert check(admin.key, headers=nginx("GET", "/api/v1/billing")).status_code == 403


def test_the_policy_file_comes_from_the_environment(monkeypatch, settings, policy_file):
    monkeypatch.setenv("APIKEYS_POLICY_FILE", str(policy_file))
    app = create_app(settings)
    policy = app.extensions["apikeys.policy"]
    assert policy.required_scope("GET", "/v2/stations") == "read:charge_points"
    assert policy.required_scope("GET", "/api/v1/billing") is None


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("GET /v2/stations/** read:charge_points\nGET /v2/x\n", "line 2: expected"),
        ("GET /v2/stations/** read:all\n", "line 1: unknown scope 'read:all'"),
        ("# nothing\n", "the policy has no rules"),
    ],
)
def test_a_faulty_policy_file_stops_the_app_from_starting(settings, tmp_path, text, fault):
    path = tmp_path / "policy.txt"
    path.write_text(text)
    settings["APIKEYS_POLICY_FILE"] = str(path)
    with pytest.raises(ConfigError, match=f"^{path}.*{fault}"):
        create_app(settings)


def test_a_missing_policy_file_stops_the_app_from_starting(settings, tmp_path):
    settings["APIKEYS_POLICY_FILE"] = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="Cannot read the policy file"):
        create_app(settings)


# The OpenAPI document tells the truth about the check.


def test_the_openapi_document_describes_the_check(client):
    operations = client.get("/api/openapi.json").json["paths"][CHECK]
    assert set(operations) == {method.lower() for method in METHODS}
    for operation in operations.values():
        assert operation["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
        assert {"200", "400", "401", "403", "429"} <= set(operation["responses"])
        assert {"X-Auth-Org-Id", "X-Auth-Key-Id", "X-Auth-Scopes"} <= set(
            operation["responses"]["200"]["headers"]
        )
        documented = {parameter["name"] for parameter in operation["parameters"]}
        assert documented == {
            "X-Required-Scope",
            "X-Original-Method",
            "X-Original-URI",
            "X-Forwarded-Method",
            "X-Forwarded-Uri",
        }


@pytest.fixture
def unlimited(settings):
    settings["RATELIMIT_ENABLED"] = False  # flask-limiter's own switch
    # One pooled connection: a request that did not give it back would starve the next.
    settings["DATABASE_POOL_SIZE"] = 1
    settings["DATABASE_POOL_TIMEOUT"] = 1


@pytest.mark.connection_pool
def test_with_rate_limits_switched_off_nothing_is_limited(unlimited, client, check, reader):
    for _ in range(3):
        response = check(reader.key, headers={"X-Required-Scope": "read:billing"})
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response.headers
    assert check(None, headers={"X-Required-Scope": "read:billing"}).status_code == 401
    listed = client.get("/api/v1/org/api-keys", headers=bearer(reader.key))
    assert listed.status_code == 403
    assert "RateLimit-Limit" not in listed.headers


# A WebSocket handshake (OCPP's charge points connect so), forwarded with its Upgrade.

WEBSOCKET = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


@pytest.mark.parametrize(
    "target",
    [{"X-Required-Scope": "read:charge_points"}, traefik("GET", "/api/v1/charge_points/CP-1")],
    ids=["required-scope", "traefik"],
)
def test_a_websocket_handshake_is_judged_as_the_get_it_is(check, reader, target):
    allowed = check(reader.key, headers={**WEBSOCKET, **target})
    refused = check(None, headers={**WEBSOCKET, **target})

    assert allowed.status_code == 200, allowed.json
    assert allowed.headers["X-Auth-Key-Id"] == reader.id
    assert refused.status_code == 401
    assert refused.json == UNAUTHORIZED


def test_a_websocket_handshake_to_the_api_is_answered_as_a_get(client, admin):
    response = client.get("/api/v1/org/api-keys", headers={**bearer(admin.key), **WEBSOCKET})
    assert response.status_code == 200
    assert response.json["total"] == 1
