"""The HTTP API of /api/v1/org/api-keys: list, create, get and revoke."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from werkzeug.test import TestResponse

from apikeys import crypto
from apikeys.audit import AuditEvent
from apikeys.models import ApiKey
from tests.conftest import bearer

pytestmark = pytest.mark.both_databases

URL = "/api/v1/org/api-keys"
EVENTS = "/api/v1/org/audit-events"
LISTED_FIELDS = {
    "id",
    "name",
    "key_hint",
    "scopes",
    "created_at",
    "last_used_at",
    "expires_at",
    "rate_limit",
    "previous_key_expires_at",
}
CREATED_FIELDS = {"id", "name", "key", "scopes", "created_at", "expires_at", "rate_limit"}
RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
KEY_SCOPES = ("read:api_keys", "write:api_keys")
NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def error(response: TestResponse, status: int, code: str) -> dict:
    """The error object of ``response``, once its status and code are the expected ones."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["error"]["code"] == code
    return response.json["error"]


def listing(client, secret: str) -> dict:
    response = client.get(URL, headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def names(client, secret: str) -> list[str]:
    return [key["name"] for key in listing(client, secret)["data"]]


def create(client, secret: str, body) -> TestResponse:
    return client.post(URL, headers=bearer(secret), json=body)


def rejected(client, secret: str, body) -> TestResponse:
    """POST ``body``, and check that the refusal left every key as it was."""
    before, rows = listing(client, secret), ApiKey.select().count()
    response = create(client, secret, body)
    assert response.status_code >= 400
    assert listing(client, secret) == before
    assert ApiKey.select().count() == rows
    return response


def one(client, secret: str, key_id: str) -> TestResponse:
    return client.get(f"{URL}/{key_id}", headers=bearer(secret))


def revoke(client, secret: str, key_id: str) -> TestResponse:
    return client.delete(f"{URL}/{key_id}", headers=bearer(secret))


def valid(**changes) -> dict:
    return {"name": "CI Pipeline", "scopes": ["read:billing"], **changes}


#: A name that carries a key, in the forms crypto.contains_secret finds: each takes the key.
LEAKY_NAMES = {
    "whole": lambda secret: f"leak {secret}",
    "upper-cased": lambda secret: f"leak {secret.upper()}",
    "prefix-only": lambda secret: f"{crypto.PREFIX}{secret[-4:]} backup",
    "without-prefix": lambda secret: f"leak {secret[len(crypto.PREFIX) :]}",
    "without-prefix-glued": lambda secret: f"leak{secret[len(crypto.PREFIX) :]}now",
}


def audit_trail(client, secret: str) -> tuple[str, int]:
    """The audit log as its organization sees it, and every event stored."""
    response = client.get(EVENTS, headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True), AuditEvent.select().count()


def refuses_the_name(response: TestResponse, secret: str) -> None:
    """A 400 naming the field, that does not repeat the key it was sent."""
    problem = error(response, 400, "invalid_request")
    assert problem["details"] == {
        "name": ["Must not contain an API key or anything that looks like one."]
    }
    text = response.get_data(as_text=True)
    assert secret not in text and secret[len(crypto.PREFIX) :] not in text


# --- list ---------------------------------------------------------------------------------


def test_list_shows_only_the_callers_organization(client, admin, make_key, other_org):
    make_key(name="mine")
    make_key(name="theirs", organization=other_org)
    body = listing(client, admin.key)
    assert sorted(key["name"] for key in body["data"]) == ["admin", "mine"]
    assert body["total"] == 2


def test_list_is_newest_first(client, admin, make_key):
    with time_machine.travel(NOW, tick=False) as traveller:
        for name in ("bravo", "alpha", "charlie"):
            traveller.shift(timedelta(seconds=1))
            make_key(name=name)
        assert names(client, admin.key) == ["charlie", "alpha", "bravo", "admin"]


def test_list_leaves_out_revoked_keys_and_counts_the_rest(client, admin, make_key):
    gone = make_key(name="gone")
    make_key(name="kept")
    assert revoke(client, admin.key, gone.id).status_code == 204
    body = listing(client, admin.key)
    assert sorted(key["name"] for key in body["data"]) == ["admin", "kept"]
    assert body["total"] == 2


def test_list_keeps_expired_keys_and_counts_them(client, admin, make_key):
    with time_machine.travel(NOW, tick=False) as traveller:
        expired = make_key(name="expired", expires_in_days=1)
        traveller.shift(timedelta(days=2))
        assert client.get(URL, headers=bearer(expired.key)).status_code == 401
        body = listing(client, admin.key)
    assert [key["name"] for key in body["data"]] == ["expired", "admin"]
    assert body["total"] == 2
    assert body["data"][0]["expires_at"] == rfc3339(NOW + timedelta(days=1))


def test_total_counts_every_live_key(client, admin, make_key):
    for _ in range(4):
        make_key()
    body = listing(client, admin.key)
    assert body["total"] == len(body["data"]) == 5


def test_list_never_returns_a_secret(client, admin, make_key):
    issued = [admin, make_key(), make_key(key_scopes=["read:billing"])]
    response = client.get(URL, headers=bearer(admin.key))
    for key in response.json["data"]:
        assert set(key) == LISTED_FIELDS
    for secret in (key.key for key in issued):
        assert secret not in response.get_data(as_text=True)
        assert secret[4:-4] not in response.get_data(as_text=True)
    hints = {key["id"]: key["key_hint"] for key in response.json["data"]}
    assert hints == {key.id: "evk_..." + key.key[-4:] for key in issued}


def test_the_store_never_holds_a_secret(client, admin):
    created = create(client, admin.key, valid()).json
    rows = ApiKey.select().tuples()
    assert all(created["key"] not in str(value) for row in rows for value in row)


def test_list_fields_and_timestamps(client, admin, make_key):
    with time_machine.travel(NOW, tick=False):
        make_key(name="ci", key_scopes=["read:sessions", "read:billing"], expires_in_days=30)
        body = listing(client, admin.key)
    ci = next(key for key in body["data"] if key["name"] == "ci")
    assert ci["id"] and isinstance(ci["id"], str)
    assert sorted(ci["scopes"]) == ["read:billing", "read:sessions"]
    assert ci["created_at"] == rfc3339(NOW)
    assert ci["expires_at"] == rfc3339(NOW + timedelta(days=30))
    assert ci["last_used_at"] is None
    never_expires = next(key for key in body["data"] if key["name"] == "admin")
    assert never_expires["expires_at"] is None
    for key in body["data"]:
        for field in ("created_at", "last_used_at", "expires_at"):
            assert key[field] is None or RFC3339_Z.fullmatch(key[field]), key[field]


def test_last_used_at_is_null_until_the_key_is_used(client, admin, make_key):
    used = make_key(name="used")
    make_key(name="unused")
    with time_machine.travel(NOW, tick=False):
        assert client.get(URL, headers=bearer(used.key)).status_code == 200
        body = {key["name"]: key for key in listing(client, admin.key)["data"]}
    assert body["unused"]["last_used_at"] is None
    assert body["used"]["last_used_at"] == rfc3339(NOW)
    assert body["admin"]["last_used_at"] == rfc3339(NOW)


# --- create -------------------------------------------------------------------------------


def test_create_answers_201_with_the_secret_once(client, admin):
    with time_machine.travel(NOW, tick=False):
        response = create(
            client,
            admin.key,
            {
                "name": "Production Dashboard",
                "scopes": ["read:charge_points"],
                "expires_in_days": 90,
            },
        )
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    assert response.is_json
    body = response.json
    assert set(body) == CREATED_FIELDS
    assert body["name"] == "Production Dashboard"
    assert body["scopes"] == ["read:charge_points"]
    assert body["created_at"] == rfc3339(NOW)
    assert body["expires_at"] == rfc3339(NOW + timedelta(days=90))
    assert body["key"].startswith("evk_")
    assert body["key"] not in body["id"]
    assert client.get(URL, headers=bearer(body["key"])).status_code == 403
    listed = one(client, admin.key, body["id"]).json
    assert listed["key_hint"] == "evk_..." + body["key"][-4:]
    assert body["key"] not in str(listed)


def test_created_key_authenticates_with_its_scopes(client, admin):
    secret = create(client, admin.key, valid(scopes=list(KEY_SCOPES))).json["key"]
    assert names(client, secret) == ["CI Pipeline", "admin"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["read:billing"]}, "name"),
        (valid(name=None), "name"),
        (valid(name=42), "name"),
        (valid(name=["CI"]), "name"),
        (valid(name=""), "name"),
        (valid(name="   "), "name"),
        (valid(name="\t\n "), "name"),
        (valid(name="a" * 129), "name"),
        (valid(name="CI\x00Pipeline"), "name"),
        (valid(name="CI\nPipeline"), "name"),
        (valid(name="CI\tPipeline"), "name"),
        (valid(name="CI\x1b[31m"), "name"),
        (valid(name="CI\x7f"), "name"),
        (valid(name="CI\u200bPipeline"), "name"),
        (valid(name="CI\u202ePipeline"), "name"),
        (valid(name="CI\ud800"), "name"),
        ({"name": "CI"}, "scopes"),
        (valid(scopes=None), "scopes"),
        (valid(scopes=[]), "scopes"),
        (valid(scopes="read:billing"), "scopes"),
        (valid(scopes={"read:billing": True}), "scopes"),
        (valid(scopes=[1]), "scopes"),
        (valid(scopes=[None]), "scopes"),
        (valid(scopes=[["read:billing"]]), "scopes"),
        (valid(expires_in_days=0), "expires_in_days"),
        (valid(expires_in_days=3651), "expires_in_days"),
        (valid(expires_in_days=-1), "expires_in_days"),
        (valid(expires_in_days=1.5), "expires_in_days"),
        (valid(expires_in_days=1.0), "expires_in_days"),
        (valid(expires_in_days="90"), "expires_in_days"),
        (valid(expires_in_days=True), "expires_in_days"),
        (valid(expires_in_days=10**30), "expires_in_days"),
        (valid(owner="me"), "owner"),
        (valid(key="evk_chosen"), "key"),
    ],
)
def test_create_rejects_invalid_fields(client, admin, body, field):
    problem = error(rejected(client, admin.key, body), 400, "invalid_request")
    assert set(problem["details"]) == {field}
    assert problem["message"]


@pytest.mark.parametrize("leaky", LEAKY_NAMES.values(), ids=LEAKY_NAMES.keys())
def test_create_refuses_a_name_holding_a_key(client, admin, make_key, leaky):
    secret = make_key(name="victim").key
    events = audit_trail(client, admin.key)

    refuses_the_name(rejected(client, admin.key, valid(name=leaky(secret))), secret)
    assert audit_trail(client, admin.key) == events


@pytest.mark.parametrize(
    "name",
    ["ingest-2026-prod-cp-eu-west-1", "Q7hR2mXk9LpT4vNc8WzB1yFd6GsJ3uEa5KoHi0Vb", "Kevin's key"],
)
def test_create_accepts_names_that_only_resemble_keys(client, admin, name):
    response = create(client, admin.key, valid(name=name))
    assert response.status_code == 201, response.json
    assert response.json["name"] == name


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("name=CI&scopes=read:billing", "application/x-www-form-urlencoded"),
        ('{"name": "CI", "scopes": ["read:billing"]}', "text/plain"),
        ("", "application/json"),
        ('{"name": "CI", "scopes": ["read:billing"]', "application/json"),
        ("{'name': 'CI'}", "application/json"),
        ('["CI", ["read:billing"]]', "application/json"),
        ('"CI"', "application/json"),
        ("90", "application/json"),
        ("null", "application/json"),
        ("true", "application/json"),
        (b'{"name": "\xff", "scopes": ["read:billing"]}', "application/json"),
        ("[" * 50_000, "application/json"),
        (
            '{"name": "CI", "scopes": ["read:billing"], "expires_in_days": ' + "9" * 5000 + "}",
            "application/json",
        ),
    ],
    ids=[
        "form",
        "json-as-text",
        "empty",
        "truncated",
        "single-quotes",
        "array",
        "string",
        "number",
        "null",
        "boolean",
        "not-utf8",
        "too-deep",
        "huge-number",
    ],
)
def test_create_rejects_a_body_that_is_not_a_json_object(client, admin, data, content_type):
    before = listing(client, admin.key)
    response = client.post(URL, headers=bearer(admin.key), data=data, content_type=content_type)
    problem = error(response, 400, "invalid_request")
    assert problem["details"]
    assert listing(client, admin.key) == before


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("  CI Pipeline  ", "CI Pipeline"),
        ("\tCI\n", "CI"),
        ("a" * 128, "a" * 128),
        ("é" * 128, "é" * 128),
        # Joiners are part of emoji sequences and of Persian words.
        (
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
    ],
)
def test_create_accepts_and_trims_names(client, admin, sent, stored):
    response = create(client, admin.key, valid(name=sent))
    assert response.status_code == 201, response.json
    assert response.json["name"] == stored
    assert one(client, admin.key, response.json["id"]).json["name"] == stored


def test_create_collapses_duplicate_scopes(client, admin):
    scopes = ["read:sessions", "read:billing", "read:sessions", "read:billing"]
    response = create(client, admin.key, valid(scopes=scopes))
    assert response.status_code == 201
    assert sorted(response.json["scopes"]) == ["read:billing", "read:sessions"]
    assert sorted(one(client, admin.key, response.json["id"]).json["scopes"]) == [
        "read:billing",
        "read:sessions",
    ]


@pytest.mark.parametrize(
    ("scopes", "unknown"),
    [
        (["read:billing", "delete:everything"], ["delete:everything"]),
        (["admin", "read:billing", "READ:BILLING"], ["admin", "READ:BILLING"]),
        (
            ["write:analytics", "read:sessions", "read:webhooks"],
            ["write:analytics", "read:webhooks"],
        ),
    ],
)
def test_create_names_every_unknown_scope(client, admin, scopes, unknown):
    problem = error(rejected(client, admin.key, valid(scopes=scopes)), 400, "invalid_scope")
    for scope in unknown:
        assert scope in problem["message"]
    for scope in set(scopes) - set(unknown):
        assert scope not in problem["message"]


@pytest.mark.parametrize(
    ("expires_in_days", "lifetime"),
    [(None, None), (1, timedelta(days=1)), (3650, timedelta(days=3650))],
)
def test_create_sets_the_expiry(client, admin, expires_in_days, lifetime):
    with time_machine.travel(NOW, tick=False):
        response = create(client, admin.key, valid(expires_in_days=expires_in_days))
    assert response.status_code == 201
    expected = rfc3339(NOW + lifetime) if lifetime else None
    assert response.json["expires_at"] == expected
    assert one(client, admin.key, response.json["id"]).json["expires_at"] == expected


def test_create_without_expiry_never_expires(client, admin):
    response = create(client, admin.key, valid(scopes=list(KEY_SCOPES)))
    assert response.json["expires_at"] is None
    with time_machine.travel(datetime.now(UTC) + timedelta(days=3651 * 3)):
        assert client.get(URL, headers=bearer(response.json["key"])).status_code == 200


def test_created_key_expires_after_its_days(client, admin):
    with time_machine.travel(NOW, tick=False) as traveller:
        secret = create(client, admin.key, valid(scopes=list(KEY_SCOPES), expires_in_days=1))
        secret = secret.json["key"]
        traveller.shift(timedelta(days=1, seconds=-1))
        assert client.get(URL, headers=bearer(secret)).status_code == 200
        traveller.shift(timedelta(seconds=1))
        error(client.get(URL, headers=bearer(secret)), 401, "unauthorized")


def test_name_is_taken_among_live_keys(client, admin):
    assert create(client, admin.key, valid()).status_code == 201
    error(rejected(client, admin.key, valid()), 400, "name_taken")
    error(rejected(client, admin.key, valid(name="  CI Pipeline ")), 400, "name_taken")
    error(rejected(client, admin.key, valid(name="admin")), 400, "name_taken")


def test_name_of_an_expired_key_is_still_taken(client, admin, make_key):
    with time_machine.travel(NOW, tick=False) as traveller:
        make_key(name="CI Pipeline", expires_in_days=1)
        traveller.shift(timedelta(days=2))
        error(rejected(client, admin.key, valid()), 400, "name_taken")


def test_name_is_free_again_once_revoked(client, admin):
    first = create(client, admin.key, valid()).json
    assert revoke(client, admin.key, first["id"]).status_code == 204
    second = create(client, admin.key, valid())
    assert second.status_code == 201
    assert second.json["id"] != first["id"]
    assert names(client, admin.key) == ["CI Pipeline", "admin"]


def test_same_name_is_allowed_in_another_organization(client, admin, make_key, other_org):
    make_key(name="CI Pipeline", organization=other_org)
    assert create(client, admin.key, valid()).status_code == 201


def test_a_key_cannot_grant_scopes_it_lacks(client, make_key):
    caller = make_key(key_scopes=[*KEY_SCOPES, "read:billing"])
    body = valid(scopes=["read:billing", "write:billing", "read:sessions"])
    problem = error(rejected(client, caller.key, body), 403, "forbidden")
    assert "write:billing" in problem["message"]
    assert "read:sessions" in problem["message"]
    assert "read:billing" not in problem["message"]


def test_a_key_can_grant_what_it_holds(client, make_key):
    caller = make_key(key_scopes=[*KEY_SCOPES, "read:billing"])
    response = create(client, caller.key, valid(scopes=["read:billing", "write:api_keys"]))
    assert response.status_code == 201
    assert sorted(response.json["scopes"]) == ["read:billing", "write:api_keys"]


def test_unknown_scope_wins_over_a_scope_the_caller_lacks(client, make_key):
    caller = make_key(key_scopes=KEY_SCOPES)
    body = valid(scopes=["write:billing", "launch:missiles"])
    problem = error(rejected(client, caller.key, body), 400, "invalid_scope")
    assert "launch:missiles" in problem["message"]


def test_create_needs_write_api_keys(client, admin, make_key):
    reader = make_key(key_scopes=["read:api_keys", "read:billing"])
    rows = ApiKey.select().count()
    error(create(client, reader.key, valid()), 403, "forbidden")
    error(create(client, reader.key, valid(name="")), 403, "forbidden")
    assert ApiKey.select().count() == rows


def test_create_needs_a_key_before_reading_the_body(client):
    response = client.post(URL, data="{not json", content_type="application/json")
    error(response, 401, "unauthorized")


# --- get one and revoke -------------------------------------------------------------------


def test_get_one_returns_the_listed_object(client, admin, make_key):
    key = make_key(name="ci", key_scopes=["read:billing"], expires_in_days=7)
    response = one(client, admin.key, key.id)
    assert response.status_code == 200
    assert set(response.json) == LISTED_FIELDS
    listed = next(item for item in listing(client, admin.key)["data"] if item["id"] == key.id)
    assert response.json == listed
    assert key.key not in response.get_data(as_text=True)


def test_revoke_answers_204_with_an_empty_body(client, admin, make_key):
    key = make_key()
    response = revoke(client, admin.key, key.id)
    assert response.status_code == 204
    assert response.get_data() == b""
    error(one(client, admin.key, key.id), 404, "not_found")
    assert key.id not in {item["id"] for item in listing(client, admin.key)["data"]}


def test_revoked_key_fails_on_the_next_request(client, admin, make_key):
    key = make_key()
    assert client.get(URL, headers=bearer(key.key)).status_code == 200
    assert revoke(client, admin.key, key.id).status_code == 204
    response = client.get(URL, headers=bearer(key.key))
    error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_a_key_can_revoke_itself(client, admin):
    assert revoke(client, admin.key, admin.id).status_code == 204
    error(client.get(URL, headers=bearer(admin.key)), 401, "unauthorized")


def test_revoked_key_stays_revoked(client, admin, make_key):
    key = make_key()
    assert revoke(client, admin.key, key.id).status_code == 204
    error(revoke(client, admin.key, key.id), 404, "not_found")
    error(client.get(URL, headers=bearer(key.key)), 401, "unauthorized")


@pytest.mark.parametrize("method", ["get", "delete"])
def test_unknown_and_revoked_ids_are_not_found(client, admin, make_key, other_org, method):
    revoked = make_key()
    assert revoke(client, admin.key, revoked.id).status_code == 204
    foreign = make_key(organization=other_org)
    send = getattr(client, method)
    answers = [
        send(f"{URL}/{key_id}", headers=bearer(admin.key))
        for key_id in ("key_doesnotexist0000000", revoked.id, foreign.id, "x" * 300, "%00")
    ]
    for response in answers:
        error(response, 404, "not_found")
    assert len({response.get_data() for response in answers}) == 1


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("get", "", ["write:api_keys", "read:billing"]),
        ("get", "/{id}", ["write:api_keys", "read:billing"]),
        ("delete", "/{id}", ["read:api_keys", "read:billing"]),
    ],
)
def test_each_endpoint_needs_its_scope(client, admin, make_key, method, path, scopes):
    caller = make_key(key_scopes=scopes)
    target = make_key()
    response = getattr(client, method)(URL + path.format(id=target.id), headers=bearer(caller.key))
    error(response, 403, "forbidden")
    assert target.id in {item["id"] for item in listing(client, admin.key)["data"]}


@pytest.mark.parametrize(
    ("method", "path"), [("get", ""), ("post", ""), ("get", "/{id}"), ("delete", "/{id}")]
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "evk_not-a-real-key"},
    ],
)
def test_each_endpoint_needs_a_key(client, admin, make_key, method, path, headers):
    target = make_key()
    response = getattr(client, method)(
        URL + path.format(id=target.id), headers=headers, json=valid()
    )
    error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert target.id in {item["id"] for item in listing(client, admin.key)["data"]}


def test_x_api_key_header_works_on_every_endpoint(client, admin):
    headers = {"X-API-Key": admin.key}
    created = client.post(URL, headers=headers, json=valid())
    assert created.status_code == 201
    assert client.get(URL, headers=headers).json["total"] == 2
    assert client.get(f"{URL}/{created.json['id']}", headers=headers).status_code == 200
    assert client.delete(f"{URL}/{created.json['id']}", headers=headers).status_code == 204


# --- isolation between organizations ------------------------------------------------------


@pytest.fixture
def their_admin(make_key, other_org):
    return make_key(name="admin", organization=other_org)


def test_organizations_never_see_each_others_keys(client, admin, their_admin, make_key, other_org):
    make_key(name="ours")
    make_key(name="theirs", organization=other_org)
    ours, theirs = listing(client, admin.key), listing(client, their_admin.key)
    assert sorted(key["name"] for key in ours["data"]) == ["admin", "ours"]
    assert sorted(key["name"] for key in theirs["data"]) == ["admin", "theirs"]
    assert ours["total"] == theirs["total"] == 2
    assert not {key["id"] for key in ours["data"]} & {key["id"] for key in theirs["data"]}


def test_created_keys_belong_to_the_callers_organization(client, admin, their_admin):
    created = create(client, admin.key, valid(scopes=list(KEY_SCOPES))).json
    assert "CI Pipeline" in names(client, admin.key)
    assert "CI Pipeline" not in names(client, their_admin.key)
    assert sorted(names(client, created["key"])) == ["CI Pipeline", "admin"]
    error(one(client, their_admin.key, created["id"]), 404, "not_found")


def test_another_organizations_key_cannot_be_read_or_revoked(client, admin, their_admin):
    for response in (
        one(client, admin.key, their_admin.id),
        revoke(client, admin.key, their_admin.id),
    ):
        problem = error(response, 404, "not_found")
        assert problem == error(one(client, admin.key, "key_doesnotexist0000000"), 404, "not_found")
    assert client.get(URL, headers=bearer(their_admin.key)).status_code == 200
    assert one(client, their_admin.key, their_admin.id).status_code == 200
