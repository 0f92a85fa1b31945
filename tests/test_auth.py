"""Authentication: the headers that carry a key, every way a key fails, and last use."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

import pytest
import time_machine

from apikeys import crypto, db
from apikeys.errors import Unauthorized
from apikeys.models import ApiKey
from app import create_app
from tests.conftest import bearer

pytestmark = pytest.mark.both_databases

URL = "/api/v1/org/api-keys"
START = datetime(2031, 3, 14, 9, 26, 53)
INTERVAL = 60


@pytest.fixture
def queries(app, monkeypatch):
    """Every SQL statement sent from now on; clear it right before the request under test."""
    sent: list[str] = []
    database = db.database.obj
    execute_sql = database.execute_sql

    def counting(sql, params=None):
        sent.append(sql)
        return execute_sql(sql, params)

    monkeypatch.setattr(database, "execute_sql", counting)
    return sent


def _updates(sent: list[str]) -> list[str]:
    return [sql for sql in sent if sql.lstrip().upper().startswith("UPDATE")]


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.json
    assert response.json == {"error": {"code": "unauthorized", "message": Unauthorized.message}}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def _stored(key_id: str) -> ApiKey:
    return ApiKey.get_by_id(key_id)


# Which headers carry a key


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(client, admin, scheme):
    response = client.get(URL, headers={"Authorization": f"{scheme} {admin.key}"})
    assert response.status_code == 200


def test_x_api_key_header(client, admin):
    assert client.get(URL, headers={"X-API-Key": admin.key}).status_code == 200


def test_both_headers_with_the_same_key(client, admin):
    headers = {**bearer(admin.key), "X-API-Key": admin.key}
    assert client.get(URL, headers=headers).status_code == 200


def test_both_headers_with_different_valid_keys_is_refused(client, admin, make_key):
    other = make_key(name="other")
    assert_unauthorized(client.get(URL, headers={**bearer(admin.key), "X-API-Key": other.key}))
    assert_unauthorized(client.get(URL, headers={**bearer(other.key), "X-API-Key": admin.key}))


def test_both_headers_one_of_them_invalid_is_refused(client, admin):
    unknown = crypto.generate_secret()
    assert_unauthorized(client.get(URL, headers={**bearer(admin.key), "X-API-Key": unknown}))
    assert_unauthorized(client.get(URL, headers={**bearer(unknown), "X-API-Key": admin.key}))
    assert_unauthorized(client.get(URL, headers={**bearer(admin.key), "X-API-Key": "junk"}))
    assert_unauthorized(client.get(URL, headers={**bearer(admin.key), "X-API-Key": ""}))


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic {basic}",
        "Basic {key}",
        "Token {key}",
        "Digest {key}",
        "{key}",
        "Bearer{key}",
    ],
)
def test_other_authorization_schemes_are_refused(client, admin, authorization):
    basic = base64.b64encode(f"{admin.key}:".encode()).decode()
    value = authorization.format(key=admin.key, basic=basic)
    assert_unauthorized(client.get(URL, headers={"Authorization": value}))


def test_other_scheme_is_refused_even_beside_a_valid_x_api_key(client, admin):
    headers = {"Authorization": f"Basic {admin.key}", "X-API-Key": admin.key}
    assert_unauthorized(client.get(URL, headers=headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer    "},
        {"Authorization": ""},
        {"X-API-Key": ""},
        {"X-API-Key": "   "},
    ],
)
def test_empty_token_is_refused(client, admin, headers):
    assert_unauthorized(client.get(URL, headers=headers))


def test_missing_key_is_refused(client, admin):
    assert_unauthorized(client.get(URL))
    assert_unauthorized(client.post(URL, json={"name": "x", "scopes": ["read:billing"]}))
    assert_unauthorized(client.delete(f"{URL}/key_doesnotexist"))


# Keys that are not keys never reach the database


def _malformed(secret: str) -> dict[str, str]:
    body = secret[len(crypto.PREFIX) :]
    return {
        "bad checksum": secret[:-1] + ("A" if secret[-1] != "A" else "B"),
        "typo in the body": secret[:10] + ("x" if secret[10] != "x" else "y") + secret[11:],
        "wrong prefix": "evx_" + body,
        "no prefix": body,
        "other vendor": "sk_live_" + body,
        "too long": secret + "a",
        "too short": secret[:-1],
        "far too long": secret * 100,
        "not base62": secret[:-7] + "-" + secret[-6:],
        "non-ASCII checksum": secret[:-1] + "é",
        "lower-cased": secret.lower() if secret.lower() != secret else secret.upper(),
    }


@pytest.mark.parametrize("kind", list(_malformed(crypto.generate_secret())))
@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_malformed_key_is_refused_without_a_query(client, admin, queries, kind, header):
    candidate = _malformed(admin.key)[kind]
    value = f"Bearer {candidate}" if header == "Authorization" else candidate
    queries.clear()
    assert_unauthorized(client.get(URL, headers={header: value}))
    assert queries == []


def test_malformed_key_is_refused_with_the_database_gone(app, client, admin, monkeypatch):
    def unreachable(*args, **kwargs):
        raise AssertionError("the database was touched")

    monkeypatch.setattr(db.database.obj, "execute_sql", unreachable)
    monkeypatch.setattr(db.database.obj, "cursor", unreachable)
    for candidate in _malformed(admin.key).values():
        assert_unauthorized(client.get(URL, headers=bearer(candidate)))


def test_query_counter_sees_a_well_formed_key_looked_up(client, admin, queries):
    # The control for the tests above: a well-formed key does reach the database.
    queries.clear()
    assert_unauthorized(client.get(URL, headers=bearer(crypto.generate_secret())))
    assert any("api_key" in sql for sql in queries)


# Keys that are well formed but do not authenticate


def test_unknown_well_formed_key_is_refused(client, admin):
    unknown = crypto.generate_secret()
    assert crypto.is_well_formed(unknown)
    assert_unauthorized(client.get(URL, headers=bearer(unknown)))
    assert_unauthorized(client.get(URL, headers={"X-API-Key": unknown}))


def test_expired_key_is_refused(client, make_key):
    with time_machine.travel(START, tick=False) as traveller:
        key = make_key(expires_in_days=1)
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
        traveller.move_to(START + timedelta(days=1, seconds=-1))
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
        traveller.move_to(START + timedelta(days=1))
        assert_unauthorized(client.get(URL, headers=bearer(key.key)))
        traveller.move_to(START + timedelta(days=400))
        assert_unauthorized(client.get(URL, headers={"X-API-Key": key.key}))


def test_key_without_expiry_keeps_working(client, make_key):
    with time_machine.travel(START, tick=False) as traveller:
        key = make_key()
        traveller.move_to(START + timedelta(days=3650 * 3))
        assert client.get(URL, headers=bearer(key.key)).status_code == 200


def test_revoked_key_is_refused_on_the_very_next_request(client, admin, make_key):
    key = make_key(name="soon revoked")
    assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert client.delete(f"{URL}/{key.id}", headers=bearer(admin.key)).status_code == 204
    assert_unauthorized(client.get(URL, headers=bearer(key.key)))
    assert_unauthorized(client.get(URL, headers={"X-API-Key": key.key}))
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200


def test_key_that_revokes_itself_is_refused_next(client, make_key):
    key = make_key(name="self")
    assert client.delete(f"{URL}/{key.id}", headers=bearer(key.key)).status_code == 204
    assert_unauthorized(client.get(URL, headers=bearer(key.key)))


def test_revocation_is_seen_by_another_instance(app, settings, admin, make_key):
    key = make_key(name="seen everywhere")
    first, second = app.test_client(), create_app(settings).test_client()
    # Both instances have served the key, so any cache they might keep is warm.
    for client in (first, second, first, second):
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert first.delete(f"{URL}/{key.id}", headers=bearer(admin.key)).status_code == 204
    assert_unauthorized(second.get(URL, headers=bearer(key.key)))
    assert_unauthorized(first.get(URL, headers=bearer(key.key)))


def test_every_failure_reads_the_same(client, admin, make_key):
    with time_machine.travel(START, tick=False) as traveller:
        expired = make_key(name="expired", expires_in_days=1)
        revoked = make_key(name="revoked")
        ApiKey.revoke(revoked.organization_id, revoked.id)
        traveller.move_to(START + timedelta(days=2))
        responses = [
            client.get(URL),
            client.get(URL, headers=bearer("evk_nonsense")),
            client.get(URL, headers=bearer(crypto.generate_secret())),
            client.get(URL, headers=bearer(expired.key)),
            client.get(URL, headers=bearer(revoked.key)),
            client.get(URL, headers={"Authorization": f"Basic {admin.key}"}),
        ]
    for response in responses:
        assert_unauthorized(response)
    bodies = {response.get_data() for response in responses}
    assert len(bodies) == 1
    message = Unauthorized.message.lower()
    for telltale in ("expired", "revoked", "malformed", "unknown", "checksum", "not found"):
        assert telltale not in message


# last_used_at


def test_first_use_is_recorded(client, make_key, queries):
    key = make_key()
    assert _stored(key.id).last_used_at is None
    with time_machine.travel(START, tick=False):
        queries.clear()
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert len(_updates(queries)) == 1
    assert _stored(key.id).last_used_at == START


def test_uses_within_the_interval_do_not_write(client, make_key, queries):
    key = make_key()
    with time_machine.travel(START, tick=False) as traveller:
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
        queries.clear()
        for seconds in (0, 1, 30, INTERVAL - 1):
            traveller.move_to(START + timedelta(seconds=seconds))
            assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert _updates(queries) == []
    assert _stored(key.id).last_used_at == START


def test_use_after_the_interval_writes_again(client, make_key, queries):
    key = make_key()
    later = START + timedelta(seconds=INTERVAL + 1)
    with time_machine.travel(START, tick=False) as traveller:
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
        traveller.move_to(later)
        queries.clear()
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
        assert len(_updates(queries)) == 1
        assert _stored(key.id).last_used_at == later
        traveller.move_to(later + timedelta(seconds=INTERVAL * 10))
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert _stored(key.id).last_used_at == later + timedelta(seconds=INTERVAL * 10)


def test_failed_authentication_records_no_use(client, make_key, queries):
    key = make_key(name="to revoke")
    ApiKey.revoke(key.organization_id, key.id)
    queries.clear()
    assert_unauthorized(client.get(URL, headers=bearer(key.key)))
    assert _updates(queries) == []
    assert _stored(key.id).last_used_at is None


def test_shown_last_use_is_never_older_than_the_interval(client, admin, make_key):
    key = make_key(name="watched")

    def shown() -> datetime:
        listed = client.get(f"{URL}/{key.id}", headers=bearer(admin.key)).json
        return datetime.strptime(listed["last_used_at"], "%Y-%m-%dT%H:%M:%SZ")

    with time_machine.travel(START, tick=False) as traveller:
        for seconds in range(0, 5 * INTERVAL, 7):
            now = START + timedelta(seconds=seconds)
            traveller.move_to(now)
            assert client.get(URL, headers=bearer(key.key)).status_code == 200
            assert now - timedelta(seconds=INTERVAL) <= shown() <= now


@pytest.fixture
def write_every_time(settings):
    settings["LAST_USED_INTERVAL_SECONDS"] = 0
    return settings


def test_zero_interval_writes_every_time(write_every_time, client, make_key, queries):
    key = make_key()
    with time_machine.travel(START, tick=False) as traveller:
        queries.clear()
        for seconds in range(5):
            traveller.move_to(START + timedelta(seconds=seconds))
            assert client.get(URL, headers=bearer(key.key)).status_code == 200
            assert _stored(key.id).last_used_at == START + timedelta(seconds=seconds)
        # Even with the clock standing still, each use writes.
        assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert len(_updates(queries)) == 6
