"""A hostile client's inputs: each is a clear 4xx in the error shape, changes nothing, never 500."""

from __future__ import annotations

import json

import pytest

from apikeys.http_errors import MAX_DETAILS
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


# --- the body of a create -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        '{"name": "\\ud800", ' + SCOPE + "}",
        '{"name": "CI \\udfff", ' + SCOPE + "}",
        '{"name": "\\ude00\\ud83d", ' + SCOPE + "}",
        '{"name": "CI\\u0000", ' + SCOPE + "}",
        '{"name": "\\u0000", ' + SCOPE + "}",
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "reversed-pair", "nul-inside", "only-nul"],
)
def test_a_name_no_database_can_store_is_refused(client, admin, unchanged, data):
    assert set(refused(post(client, admin.key, data))["details"]) == {"name"}


def test_an_escaped_surrogate_pair_is_one_character(client, admin):
    response = post(client, admin.key, '{"name": "CI \\ud83d\\ude00", ' + SCOPE + "}")
    assert response.status_code == 201, response.json
    assert response.json["name"] == "CI \U0001f600"


@pytest.mark.parametrize(
    "scopes",
    ['["read:billing\\u0000"]', '["\\u0000"]', '["\\ud800"]', '["read:billing", "\\udfff"]'],
    ids=["nul-suffix", "only-nul", "lone-surrogate", "lone-surrogate-after-valid"],
)
def test_a_scope_with_nul_or_a_surrogate_is_an_invalid_scope(client, admin, unchanged, scopes):
    response = post(client, admin.key, '{"name": "CI", "scopes": ' + scopes + "}")
    refused(response, code="invalid_scope")
    # The message names the scope, escaped: the answer is still valid UTF-8 JSON.
    response.get_data().decode("utf-8")


@pytest.mark.parametrize(
    "data",
    [
        '{"name": "CI", "name": "CD", ' + SCOPE + "}",
        '{"name": "CI", ' + SCOPE + ', "scopes": ["write:api_keys"]}',
        '{"name": "CI", ' + SCOPE + ', "expires_in_days": 1, "expires_in_days": null}',
    ],
    ids=["name-twice", "scopes-twice", "expiry-twice"],
)
def test_a_key_given_twice_is_refused(client, admin, unchanged, data):
    # Parsers disagree on which one wins: a proxy may have checked the other one.
    problem = refused(post(client, admin.key, data))
    assert "twice" in problem["message"] or "duplicate" in problem["message"].lower()


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\xef\xbb\xbf" + b'{"name": "CI", ' + SCOPE.encode() + b"}", "application/json"),
        (('{"name": "CI", ' + SCOPE + "}").encode("utf-16"), "application/json"),
        (('{"name": "CI", ' + SCOPE + "}").encode("utf-16-le"), "application/json"),
        (('{"name": "CI", ' + SCOPE + "}").encode("utf-32"), "application/json"),
        (('{"name": "CI", ' + SCOPE + "}").encode("utf-32-be"), "application/json"),
        (
            ('{"name": "Caf\u00e9", ' + SCOPE + "}").encode("latin-1"),
            "application/json; charset=latin-1",
        ),
        (
            ('{"name": "Caf\u00e9", ' + SCOPE + "}").encode("latin-1"),
            "application/json; charset=iso-8859-1",
        ),
        (('{"name": "CI", ' + SCOPE + "}").encode("utf-16"), "application/json; charset=utf-16"),
        (b'{"name": "\xed\xa0\x80", ' + SCOPE.encode() + b"}", "application/json"),
        (b'{"name": "\xc0\xaf", ' + SCOPE.encode() + b"}", "application/json"),
    ],
    ids=[
        "utf8-bom",
        "utf16-bom",
        "utf16le",
        "utf32-bom",
        "utf32be",
        "latin1",
        "iso-8859-1",
        "utf16-declared",
        "utf8-encoded-surrogate",
        "overlong-utf8",
    ],
)
def test_a_body_that_is_not_utf8_json_is_refused(client, admin, unchanged, data, content_type):
    # JSON between systems is UTF-8 without a byte order mark (RFC 8259, section 8.1).
    assert refused(post(client, admin.key, data, content_type))["details"]


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "latin-1", "utf-16", "no-such-codec"])
def test_the_charset_parameter_is_ignored_for_utf8(client, admin, charset):
    # RFC 8259 defines no charset for application/json: the body is read as UTF-8.
    data = '{"name": "Caf\u00e9", ' + SCOPE + "}"
    response = post(client, admin.key, data.encode(), f"application/json; charset={charset}")
    assert response.status_code == 201, response.json
    assert response.json["name"] == "Caf\u00e9"


@pytest.mark.parametrize(
    "expires",
    [
        "1e400",
        "-1e400",
        "90.0",
        "9e1",
        '"90"',
        "-0",
        "-0.0",
        "true",
        "false",
        "NaN",
        "Infinity",
        "-Infinity",
        "[90]",
        '{"days": 90}',
        "9" * 4300,
        "-" + "9" * 400,
        "0x5a",
        "090",
        "+90",
    ],
)
def test_an_expiry_that_is_not_a_plain_integer_in_range_is_refused(
    client, admin, unchanged, expires
):
    data = '{"name": "CI", ' + SCOPE + ', "expires_in_days": ' + expires + "}"
    problem = refused(post(client, admin.key, data))
    assert problem["details"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["expires_in_days", "extra"])
def test_nan_and_infinity_are_not_json(client, admin, unchanged, constant, where):
    data = '{"name": "CI", ' + SCOPE + f', "{where}": {constant}}}'
    assert refused(post(client, admin.key, data))["details"] == {"body": ["Invalid JSON body."]}


@pytest.mark.parametrize("depth", [100, 900, 5_000, 25_000])
@pytest.mark.parametrize("where", ["name", "scopes", "expires_in_days", "extra"])
def test_deeply_nested_values_are_refused(client, admin, unchanged, depth, where):
    nested = "[" * depth + "]" * depth
    body = {"name": '"CI"', "scopes": '["read:billing"]', where: nested}
    data = "{" + ", ".join(f'"{field}": {value}' for field, value in body.items()) + "}"
    refused(post(client, admin.key, data))


@pytest.mark.parametrize(
    "data",
    [
        "[]",
        "[{}]",
        '"name"',
        "null",
        "0",
        "-0",
        "1e400",
        "true",
        '""',
        " ",
        "\n\t ",
        "{}",
        "{} {}",
        '{"name": "CI", ' + SCOPE + "} []",
        "\x00",
        "{\x00}",
    ],
)
def test_a_body_that_is_not_one_object_is_refused(client, admin, unchanged, data):
    refused(post(client, admin.key, data))


def test_a_non_object_body_for_a_delete_is_ignored_not_crashed(client, admin, make_key):
    target = make_key()
    response = client.delete(
        f"{URL}/{target.id}",
        headers=bearer(admin.key),
        data="[" * 10_000,
        content_type="application/json",
    )
    assert response.status_code == 204


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


def test_long_unknown_scopes_are_named_but_cut_short(client, admin, unchanged):
    unknown = [f"{n:02}" + "x" * 900 for n in range(64)]
    response = post(client, admin.key, json.dumps({"name": "CI", "scopes": unknown}))
    message = refused(response, code="invalid_scope")["message"]
    assert all(repr(scope[:64]) + "..." in message for scope in unknown)
    assert len(response.get_data()) < 6_000


# --- the key id in the path ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key_id",
    [
        "%00",
        "key%00",
        "%ff",
        "%ed%a0%80",
        "%c0%af",
        "%e2%80%a8",
        "%ef%bb%bf",
        "%20",
        "%0a",
        "caf%c3%a9",
        "\u00e9",
        "%25",
        "..%2f..",
        "x" * 41,
        "x" * 10_000,
        "%ff" * 3000,
        "key_" + "%00" * 100,
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_strange_key_id_is_not_found(client, admin, unchanged, method, key_id):
    response = client.open(f"{URL}/{key_id}", method=method, headers=bearer(admin.key))
    refused(response, 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "?%ff=%ff",
        "?%00=%00",
        "?limit=abc&after=%ff",
        "?a=" + "b" * 20_000,
        "?" + "&" * 5_000,
        "?%ed%a0%80",
        "?a[b][c]=1",
        "?scopes=write:api_keys",
    ],
)
def test_junk_query_strings_change_nothing(client, admin, unchanged, query):
    listed = client.get(URL + query, headers=bearer(admin.key))
    if query.startswith("?limit="):
        # The listing's own parameters (SPEC 11.3), malformed: refused, never ignored.
        refused(listed)
    else:
        assert listed.status_code == 200
    response = client.post(URL + query, headers=bearer(admin.key), json={"name": ""})
    refused(response)


# --- the key in the headers ---------------------------------------------------------------


def _latin1(value: bytes) -> str:
    """A header as a WSGI server hands it over: the raw bytes read as latin-1."""
    return value.decode("latin-1")


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": _latin1(b"Bearer \xff\xfe" + key.encode())},
        lambda key: {"Authorization": _latin1("Bearer caf\u00e9".encode())},
        lambda key: {"Authorization": _latin1(b"Bearer " + key.encode() + b"\xc3\xa9")},
        lambda key: {"Authorization": _latin1(b"B\xe9arer " + key.encode())},
        lambda key: {"X-API-Key": _latin1(b"\xff" * 64)},
        lambda key: {"X-API-Key": _latin1(key.encode()[:-1] + b"\xe9")},
        lambda key: {"X-API-Key": key + "\x00"},
        lambda key: {"X-API-Key": "\x00" + key},
        lambda key: {"Authorization": f"Bearer {key}\x00"},
        lambda key: {"Authorization": f"Bearer {key[:20]}\x00{key[21:]}"},
        lambda key: {"Authorization": f"Bearer {key} {key}"},
        lambda key: {"Authorization": f"Bearer {key},{key}"},
        lambda key: {"Authorization": f"Basic {key}"},
        lambda key: {"Authorization": "Bearer " + "x" * 8_000},
        lambda key: {"Authorization": "Bearer\t" + key[:-1]},
        lambda key: {"Authorization": key.upper()},
        lambda key: {"Authorization": f"Bearer {key}", "X-API-Key": _latin1(b"\xe9")},
    ],
    ids=[
        "latin1-before",
        "non-ascii",
        "utf8-after",
        "latin1-scheme",
        "x-api-key-bytes",
        "x-api-key-last-byte",
        "x-api-key-nul-after",
        "x-api-key-nul-before",
        "bearer-nul-after",
        "bearer-nul-inside",
        "two-keys",
        "comma-keys",
        "basic",
        "long",
        "one-short",
        "no-scheme",
        "disagreeing-headers",
    ],
)
def test_a_malformed_key_is_unauthorized(client, admin, unchanged, headers):
    response = client.post(URL, headers=headers(admin.key), json={"name": "CI", "scopes": []})
    refused(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": f"Bearer {key} "},
        lambda key: {"Authorization": f"Bearer {key}\t"},
        lambda key: {"Authorization": f"  Bearer   {key}  "},
        lambda key: {"X-API-Key": f" {key} "},
    ],
    ids=["space", "tab", "padded", "x-api-key"],
)
def test_white_space_around_the_key_is_the_header_not_the_key(client, admin, headers):
    # RFC 9110, section 5.5: the white space around a field value is not part of it.
    assert client.get(URL, headers=headers(admin.key)).status_code == 200
