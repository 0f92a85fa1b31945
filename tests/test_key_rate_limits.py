"""Each key's own rate limit (SPEC 11.4): set on create and PATCH, capped by
RATE_LIMIT_MAX_PER_KEY, spent by the API and the check, shown in the RateLimit headers."""

from __future__ import annotations

import pytest

from apikeys import config, key_limits
from apikeys.config import ConfigError
from apikeys.models import ApiKey
from app import create_app
from tests.conftest import bearer
from tests.test_api_keys import URL, create, error

pytestmark = pytest.mark.both_databases

CHECK = "/api/v1/auth/check"


@pytest.fixture
def settings(settings):
    settings["RATE_LIMIT_PER_KEY"] = "100/minute"
    return settings


@pytest.fixture
def capped(settings):
    settings["RATE_LIMIT_MAX_PER_KEY"] = "1000/minute"
    return settings


def new_key(client, admin, rate_limit) -> dict:
    body = {"name": f"limited {rate_limit}", "scopes": ["read:billing"], "rate_limit": rate_limit}
    response = create(client, admin.key, body)
    assert response.status_code == 201, response.json
    return response.json


def check(client, secret: str):
    return client.get(CHECK, headers={**bearer(secret), "X-Required-Scope": "read:billing"})


def test_a_keys_own_limit_is_spent_and_shown(client, admin):
    key = new_key(client, admin, "2/minute")
    assert key["rate_limit"] == "2/minute"
    headers = {**bearer(admin.key)}
    listed = client.get(URL, headers=headers).json["data"]
    assert {k["id"]: k["rate_limit"] for k in listed}[key["id"]] == "2/minute"

    own = bearer(key["key"])
    for remaining in (1, 0):
        response = client.get(f"{URL}/{key['id']}", headers=own)
        assert response.status_code == 403  # read:billing only; the budget is spent all the same
        assert response.headers["RateLimit-Limit"] == "2"
        assert response.headers["RateLimit-Remaining"] == str(remaining)
    refused = client.get(f"{URL}/{key['id']}", headers=own)
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Limit"] == "2"
    # Other keys keep the service's limit.
    assert client.get(URL, headers=headers).headers["RateLimit-Limit"] == "100"


def test_null_means_the_services_default(client, admin):
    key = new_key(client, admin, None)
    assert key["rate_limit"] is None
    assert check(client, key["key"]).headers["RateLimit-Limit"] == "100"


def test_every_one_of_several_limits_applies(client, admin):
    key = new_key(client, admin, "50/minute; 2 per 1 hour")
    assert [check(client, key["key"]).status_code for _ in range(3)] == [200, 200, 429]


def test_the_check_spends_the_keys_limit_from_its_leases(client, admin):
    key = new_key(client, admin, "40/minute")
    statuses = [check(client, key["key"]).status_code for _ in range(45)]
    assert statuses == [200] * 40 + [429] * 5
    assert check(client, key["key"]).headers["RateLimit-Limit"] == "40"


def test_patch_changes_the_limit_without_a_restart(client, admin):
    key = new_key(client, admin, None)
    assert check(client, key["key"]).headers["RateLimit-Limit"] == "100"

    patched = client.patch(
        f"{URL}/{key['id']}", headers=bearer(admin.key), json={"rate_limit": "50/minute"}
    )
    assert patched.json["rate_limit"] == "50/minute"
    first = check(client, key["key"])
    assert (first.status_code, first.headers["RateLimit-Limit"]) == (200, "50")

    client.patch(f"{URL}/{key['id']}", headers=bearer(admin.key), json={"rate_limit": None})
    assert check(client, key["key"]).headers["RateLimit-Limit"] == "100"


def patch_limit(client, admin, key, rate_limit):
    body = {"rate_limit": rate_limit}
    response = client.patch(f"{URL}/{key['id']}", headers=bearer(admin.key), json=body)
    assert response.status_code == 200, response.json


def test_a_lowered_limit_binds_at_once_on_what_its_window_has_spent(client, admin):
    key = new_key(client, admin, None)
    own = bearer(key["key"])
    assert [client.get(URL, headers=own).status_code for _ in range(5)] == [403] * 5

    patch_limit(client, admin, key, "3/minute")  # 5 spent already, in this minute

    refused = client.get(URL, headers=own)
    assert (refused.status_code, refused.headers["RateLimit-Limit"]) == (429, "3")
    assert check(client, key["key"]).status_code == 429
    # A higher one goes on from what was spent (the refused requests count nothing).
    patch_limit(client, admin, key, "10/minute")
    assert client.get(URL, headers=own).headers["RateLimit-Remaining"] == "4"


def test_a_lowered_limit_binds_the_check_at_once(client, admin):
    key = new_key(client, admin, None)
    assert [check(client, key["key"]).status_code for _ in range(5)] == [200] * 5

    patch_limit(client, admin, key, "5/minute")

    assert check(client, key["key"]).status_code == 429


@pytest.mark.parametrize(
    "rate_limit",
    [
        "",
        "lots",
        "0/second",
        "10/fortnight",
        "10/second,5/minute",  # ';' separates limits
        "1/second;1/minute;1/hour;1/day;1/month",  # at most four
        "5/minute\n",
        " 5/minute",
        "5/Minute",
        "10000000000/second",
        5,
        ["5/minute"],
    ],
)
def test_malformed_limits_are_400_on_create_and_patch(client, admin, make_key, rate_limit):
    rows = ApiKey.select().count()
    body = {"name": "n", "scopes": ["read:billing"], "rate_limit": rate_limit}
    assert "rate_limit" in error(create(client, admin.key, body), 400, "invalid_request")["details"]
    assert ApiKey.select().count() == rows

    target = make_key()
    response = client.patch(
        f"{URL}/{target.id}", headers=bearer(admin.key), json={"rate_limit": rate_limit}
    )
    assert "rate_limit" in error(response, 400, "invalid_request")["details"]
    assert ApiKey.get_by_id(target.id).rate_limit is None


#: Against a cap of 1000/minute: over one minute, what each lets through.
AGAINST_THE_CAP = [
    ("1000/minute", True),
    ("1001/minute", False),
    ("16/second", True),  # 960
    ("17/second", False),  # 1020
    ("1000/hour", True),  # all 1000 may come in one minute
    ("1001/hour", False),
    ("2000/day", False),
    ("100/second;900/minute", True),  # the least of 6000 and 900
    ("100/second;1001/minute", False),
    ("2000 per 2 minutes", False),  # 2000 may come in one minute
    ("1 per 2 seconds", True),
]


@pytest.mark.parametrize(("rate_limit", "within"), AGAINST_THE_CAP)
def test_the_cap_bounds_create_and_patch(capped, client, admin, make_key, rate_limit, within):
    body = {"name": "n", "scopes": ["read:billing"], "rate_limit": rate_limit}
    created = create(client, admin.key, body)
    target = make_key()
    patched = client.patch(
        f"{URL}/{target.id}", headers=bearer(admin.key), json={"rate_limit": rate_limit}
    )
    if within:
        assert (created.status_code, patched.status_code) == (201, 200), created.json
        assert patched.json["rate_limit"] == rate_limit
    else:
        for response in (created, patched):
            refusal = error(response, 400, "invalid_request")
            assert "1000/minute" in refusal["details"]["rate_limit"][0]
        assert not ApiKey.select().where(ApiKey.name == "n").exists()
        assert ApiKey.get_by_id(target.id).rate_limit is None


@pytest.mark.parametrize(("rate_limit", "within"), AGAINST_THE_CAP)
def test_exceeding_the_cap_as_the_module_defines_it(rate_limit, within):
    assert key_limits.exceeds(rate_limit.replace(" per ", "/"), "1000/minute") is not within


def test_without_a_cap_the_services_default_is_the_most(client, admin):
    refused = create(
        client, admin.key, {"name": "a", "scopes": ["read:billing"], "rate_limit": "101/minute"}
    )
    error(refused, 400, "invalid_request")
    assert new_key(client, admin, "100/minute")["rate_limit"] == "100/minute"


def test_a_cap_lowered_since_binds_keys_set_above_it(client, app, admin):
    key = new_key(client, admin, "50/minute")
    app.config["RATE_LIMIT_MAX_PER_KEY"] = "2/minute"
    app.config["RATE_LIMIT_PER_KEY"] = "2/minute"
    assert [check(client, key["key"]).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"RATE_LIMIT_MAX_PER_KEY": "lots"}, "RATE_LIMIT_MAX_PER_KEY must be a rate limit"),
        # A limit of none would refuse every request for ever, saying "retry in 1 s".
        ({"RATE_LIMIT_PER_KEY": "0/minute"}, "RATE_LIMIT_PER_KEY must be a rate limit"),
        ({"RATE_LIMIT_FAILED_AUTH": "0/second"}, "RATE_LIMIT_FAILED_AUTH must be a rate limit"),
        (
            {"RATE_LIMIT_MAX_PER_KEY": "0/minute", "RATE_LIMIT_PER_KEY": "0/minute"},
            "RATE_LIMIT_PER_KEY must be a rate limit",
        ),
        (
            {"RATE_LIMIT_MAX_PER_KEY": "10/minute", "RATE_LIMIT_PER_KEY": "11/minute"},
            "RATE_LIMIT_PER_KEY must not exceed RATE_LIMIT_MAX_PER_KEY",
        ),
    ],
)
def test_a_faulty_cap_stops_the_start(database_url, overrides, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"TESTING": True, "DATABASE_URL": database_url, **overrides})


def test_the_cap_is_read_from_the_environment():
    assert config.from_environment({})["RATE_LIMIT_MAX_PER_KEY"] is None
    read = config.from_environment({"RATE_LIMIT_MAX_PER_KEY": "5/second"})
    assert read["RATE_LIMIT_MAX_PER_KEY"] == "5/second"
    assert key_limits.cap(read) == "5/second"
    assert key_limits.cap(config.from_environment({})) == "1000/minute"
