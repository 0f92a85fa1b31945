"""A hostile client's inputs: each is a clear 4xx in the error shape, changes nothing, never 500."""

from __future__ import annotations

import json

import pytest

from apikeys.errors import MAX_DETAILS
from apikeys.models import ApiKey, Organization
from tests.conftest import bearer

pytestmark = pytest.mark.both_databases

URL = "/api/v1/org/api-keys"
SCOPE = '"scopes": ["read:billing"]'


@pytest.fixture
def unchanged(app, admin):
    """Every row of the store, compared after the test: a refused request changes nothing
    (but the caller's key's last use, which authentication records)."""

    def rows():
        keys = ApiKey.select().order_by(ApiKey.id).dicts()
        keys = [{**key, "last_used_at": None} for key in keys]
        return keys, list(Organization.select().order_by(Organization.id).dicts())

    before = rows()
    yield
    assert rows() == before


def refused(response, status: int = 400, code: str = "invalid_request") -> dict:
    """The response is the service's error object with this status and code."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def post(client, secret: str, data: bytes | str, content_type: str = "application/json"):
    return client.post(URL, headers=bearer(secret), data=data, content_type=content_type)


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "\u200d",
        "\u200d" * 3,
        "\u200c",
        " \u200d\u200c ",
        "\u3164",
        "\u3164\u3164",
        "\u115f",
        "\u1160",
        "\uffa0",
        "\u2800",
        "\u2800 \u2800",
        "\U0001d159",
        "\ufe0f",
        "\u034f",
        "\u17b4\u17b5",
        "\u0301",
        "\u3000",
        "\u00a0",
        "\ue000",
        "\U000e0001",
        "\u180e",
        "\u2065",
        "\u3164\u200d\u2800",
    ],
)
def test_a_name_with_nothing_visible_is_blank(client, admin, unchanged, name):
    problem = refused(
        post(client, admin.key, json.dumps({"name": name, "scopes": ["read:billing"]}))
    )
    assert set(problem["details"]) == {"name"}


@pytest.mark.parametrize(
    "name",
    ["CI\u2028Pipeline", "CI\u2029", "\u2028CI", "CI \u2028", "\u2029\u2029CI", "CI\u0085Pipeline"],
)
def test_a_name_with_a_line_or_paragraph_separator_is_refused(client, admin, unchanged, name):
    # Anywhere, the ends included: trimming would have dropped them quietly.
    problem = refused(
        post(client, admin.key, json.dumps({"name": name, "scopes": ["read:billing"]}))
    )
    assert set(problem["details"]) == {"name"}


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f3f3\ufe0f\u200d\U0001f308",
        "\u2764\ufe0f",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        "\u0928\u092e\u0938\u094d\u0924\u0947",
        "e\u0301",
        "\u3164CI",
        "CI\u3000Pipeline",
        "\u00bd",
        "-",
        "\u2800CI",
    ],
)
def test_a_name_with_something_visible_is_accepted(client, admin, name):
    response = post(client, admin.key, json.dumps({"name": name, "scopes": ["read:billing"]}))
    assert response.status_code == 201, response.json
    assert response.json["name"] == name


# --- scopes -------------------------------------------------------------------------------


def test_many_null_scopes_are_one_short_error(client, admin, unchanged):
    response = post(client, admin.key, json.dumps({"name": "CI", "scopes": [None] * 10_000}))
    problem = refused(response)
    assert set(problem["details"]) == {"scopes"}
    assert len(response.get_data()) < 2_000


@pytest.mark.parametrize("count", [65, 1_000, 3_000])
def test_an_oversized_scope_list_is_refused_before_its_entries(client, admin, unchanged, count):
    response = post(
        client, admin.key, json.dumps({"name": "CI", "scopes": ["read:billing"] * count})
    )
    problem = refused(response)
    assert problem["details"] == {"scopes": ["At most 64 entries."]}


def test_duplicate_scopes_up_to_the_maximum_are_collapsed(client, admin):
    response = post(client, admin.key, json.dumps({"name": "CI", "scopes": ["read:billing"] * 64}))
    assert response.status_code == 201, response.json
    assert response.json["scopes"] == ["read:billing"]


# --- the size of error details ------------------------------------------------------------


def test_many_unknown_fields_give_bounded_details(client, admin, unchanged):
    body = {"name": "CI", "scopes": ["read:billing"], **{f"f{n}": n for n in range(4_000)}}
    response = post(client, admin.key, json.dumps(body))
    problem = refused(response)
    assert len(problem["details"]) == MAX_DETAILS
    assert f"the first {MAX_DETAILS} of 4000 fields" in problem["message"]
    assert len(response.get_data()) < 2_000


def test_long_field_names_are_not_echoed_whole(client, admin, unchanged):
    body = {"name": "CI", "scopes": ["read:billing"], "x" * 60_000: 1}
    response = post(client, admin.key, json.dumps(body))
    assert list(refused(response)["details"]) == ["x" * 64]
    assert len(response.get_data()) < 1_000


def test_the_details_of_each_entry_are_bounded_too(client, admin, unchanged):
    response = post(client, admin.key, json.dumps({"name": "CI", "scopes": [None] * 64}))
    assert len(refused(response)["details"]["scopes"]) == MAX_DETAILS
