"""The route policy on its own: the file format, the built-in rules and path normalization."""

from __future__ import annotations

import pytest

from apikeys import policy
from apikeys.config import ConfigError
from apikeys.policy import DEFAULT, METHODS, READ_METHODS, WRITE_METHODS


@pytest.mark.parametrize(
    ("resource", "read", "write"),
    [
        ("/api/v1/charge_points", "read:charge_points", "write:charge_points"),
        ("/api/v1/billing", "read:billing", "write:billing"),
        ("/api/v1/analytics", "read:analytics", None),
        ("/api/v1/webhooks", "write:webhooks", "write:webhooks"),
        ("/api/v1/sessions", "read:sessions", None),
        ("/api/v1/org/api-keys", "read:api_keys", "write:api_keys"),
        ("/api/v1/org/audit-events", "read:audit_log", None),
    ],
)
@pytest.mark.parametrize("suffix", ["", "/", "/x_1", "/x_1/status"])
def test_the_default_policy_maps_reads_and_writes_of_each_resource(resource, read, write, suffix):
    for method in READ_METHODS:
        assert DEFAULT.required_scope(method, resource + suffix) == read
    for method in WRITE_METHODS:
        assert DEFAULT.required_scope(method, resource + suffix) == write


@pytest.mark.parametrize(
    "uri",
    [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/auth/check",
        "/api/v1/charge_points_export",
        "/api/v1/billingx/1",
        "/api/v2/billing",
        "/api/v1/org",
        "/API/V1/BILLING",
        "/api/v1/Billing",
    ],
)
def test_a_route_the_default_policy_does_not_know_is_denied(uri):
    assert all(DEFAULT.required_scope(method, uri) is None for method in METHODS)


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND", "get", "", "GET "])
def test_a_method_outside_the_known_ones_is_denied(method):
    assert DEFAULT.required_scope(method, "/api/v1/billing") is None


@pytest.mark.parametrize(
    ("uri", "scope"),
    [
        ("/api/v1/%62illing", "read:billing"),
        # Doubled and trailing slashes collapse.
        ("//api//v1/billing", "read:billing"),
        ("/api/v1///billing//", "read:billing"),
        # The query string is not the path.
        ("/api/v1/billing?x=1", "read:billing"),
        ("/api/v1/sessions?next=/api/v1/billing", "read:sessions"),
        ("/api/v1/sessions?x=/../billing", "read:sessions"),
        # nginx's $request_uri keeps an absolute-form request target as sent.
        ("http://charge.example/api/v1/billing?x=1", "read:billing"),
        ("HTTPS://charge.example/api/v1/billing", "read:billing"),
    ],
)
def test_path_tricks_resolve_to_the_path_the_backend_serves(uri, scope):
    assert DEFAULT.required_scope("GET", uri) == scope


@pytest.mark.parametrize(
    "uri",
    [
        "/?x=/api/v1/billing",
        "/x#/api/v1/billing",
        # A raw fragment, which no request carries: nginx passes it on as it came.
        "/api/v1/billing#/api/v1/sessions",
        "/api/v1/billing#/../charge_points",
        "/api/v1/billing?x=1#y",
        # Dot segments: backends resolve them differently (or not at all), so the
        # resource they reach is unknowable here.
        "/api/v1/charge_points/../billing",
        "/api/v1/billing/../charge_points/1",
        "/api/v1/charge_points/cp_1/../../billing/inv_1",
        "/api/v1/./billing",
        "/api/v1/billing/.",
        "/api/v1/charge_points/%2e%2e/billing",
        "/api/v1/charge_points/%2E%2E/billing",
        "/api/v1/charge_points/.%2e/billing",
        "/api/v1/billing/%2e",
        # Path parameters: Tomcat and Jetty read "..;" as "..".
        "/api/v1/charge_points/..;/billing/invoices",
        "/api/v1/billing;jsessionid=1",
        "/api/v1/billing%3b",
        "/..",
        "/../api/v1/billing",
        "/api/../../api/v1/billing",
        "/%2e%2e/api/v1/billing",
        # Encoded separators and NUL: the backend may split or cut the path elsewhere.
        "/api/v1/charge_points%2F..%2Fbilling",
        "/api/v1/billing%2fx",
        "/api/v1/billing%5Cx",
        "/api/v1/billing%5cx",
        "/api/v1/billing%00",
        "/api/v1/billing\\x",
        # Still encoded after one decoding: a backend decoding twice would read "..".
        "/api/v1/charge_points/%252e%252e/billing",
        "/api/v1/billing/%25",
        # Not UTF-8, control characters, not a path at all.
        "/api/v1/billing/%ff",
        "/api/v1/billing/%0a",
        "/api/v1/billing/\t",
        "/api/v1/billing/a b",
        "/api/v1/billing/x, /api/v1/sessions",
        "api/v1/billing",
        "",
        "*",
        "http://charge.example",
        "ftp://charge.example/api/v1/billing",
    ],
)
def test_ambiguous_or_escaping_paths_are_denied(uri):
    assert DEFAULT.required_scope("GET", uri) is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("//", "/"),
        ("/a//b/c/", "/a/b/c"),
        ("/a/b/../c", None),
        ("/a/./b", None),
        ("/a%20b", "/a b"),
        ("/a?b#c", None),
    ],
)
def test_normalize_path(raw, normalized):
    assert policy.normalize_path(raw) == normalized


def test_a_file_is_parsed_with_comments_blank_lines_and_any_case_of_methods():
    parsed = policy.parse(
        """
        # Reads of charge point status are public to sessions readers.
        get,Head  /api/v1/charge_points/*/status  read:sessions   # first match wins

        *         /api/v1/charge_points/**        write:charge_points
        GET       /                               read:analytics
        """,
        source="policy.txt",
    )
    assert [rule.scope for rule in parsed.rules] == [
        "read:sessions",
        "write:charge_points",
        "read:analytics",
    ]
    assert parsed.rules[0].methods == {"GET", "HEAD"}
    assert parsed.rules[1].methods == set(METHODS)
    assert parsed.required_scope("GET", "/api/v1/charge_points/cp_1/status") == "read:sessions"
    assert parsed.required_scope("POST", "/api/v1/charge_points/cp_1/status") == (
        "write:charge_points"
    )
    assert parsed.required_scope("GET", "/") == "read:analytics"
    assert parsed.required_scope("GET", "/api/v1/billing") is None


def test_star_is_one_segment_and_double_star_is_the_path_and_all_below():
    parsed = policy.parse(
        "GET /a/*/c read:billing\nGET /b/** read:sessions\nGET /d read:analytics", source="p"
    )
    assert parsed.required_scope("GET", "/a/x/c") == "read:billing"
    for uri in ("/a/c", "/a//c", "/a/x/y/c", "/a/x/c/d"):
        assert parsed.required_scope("GET", uri) is None
    for uri in ("/b", "/b/", "/b/x", "/b/x/y"):
        assert parsed.required_scope("GET", uri) == "read:sessions"
    assert parsed.required_scope("GET", "/bb") is None
    assert parsed.required_scope("GET", "/d/") == "read:analytics"
    assert parsed.required_scope("GET", "/d/e") is None


def test_the_built_in_policy_is_written_in_the_file_format(tmp_path):
    path = tmp_path / "policy.txt"
    path.write_text(policy.DEFAULT_TEXT)
    assert policy.load(path).rules == DEFAULT.rules


@pytest.mark.parametrize(
    ("line", "fault"),
    [
        ("GET /api/v1/billing", "expected 'METHODS PATTERN SCOPE', got 2 field(s)"),
        ("GET /api/v1/billing read:billing extra", "got 4 field(s)"),
        ("GET /api/v1/billing read:everything", "unknown scope 'read:everything'"),
        ("GET /api/v1/billing READ:BILLING", "unknown scope 'READ:BILLING'"),
        ("FETCH /api/v1/billing read:billing", "bad method 'FETCH'"),
        ("GET,TRACE /api/v1/billing read:billing", "bad method 'TRACE'"),
        ("GET, /api/v1/billing read:billing", "bad method ''"),
        ("** /api/v1/billing read:billing", "bad method '**'"),
        ("GET api/v1/billing read:billing", "bad pattern 'api/v1/billing': it must start with /"),
        ("GET /api/**/billing read:billing", "segment '**'"),
        ("GET /api/v1/bill* read:billing", "segment 'bill*'"),
        ("GET /api/../billing read:billing", "segment '..'"),
        ("GET /api/./billing read:billing", "segment '.'"),
        ("GET /api//billing read:billing", "empty segment"),
        ("GET /api/v1/billing/ read:billing", "empty segment"),
        ("GET /api/v1/bill%69ng read:billing", "segment 'bill%69ng'"),
    ],
)
def test_a_faulty_line_is_refused_naming_the_file_and_line(tmp_path, line, fault):
    path = tmp_path / "policy.txt"
    path.write_text(f"# comment\nGET /api/v1/sessions/** read:sessions\n\n{line}\n")
    with pytest.raises(ConfigError) as error:
        policy.load(path)
    assert str(error.value).startswith(f"{path}, line 4: ")
    assert fault in str(error.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_a_file_without_rules_is_refused(tmp_path, text):
    path = tmp_path / "policy.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match="the policy has no rules"):
        policy.load(path)


def test_a_missing_or_unreadable_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the policy file .*missing.txt"):
        policy.load(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="Cannot read the policy file"):
        policy.load(tmp_path)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"GET /caf\xe9 read:billing\n")
    with pytest.raises(ConfigError, match="Cannot read the policy file .*latin1.txt"):
        policy.load(latin1)
