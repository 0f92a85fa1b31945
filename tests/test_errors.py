"""Every error, from every route, leaves as {"error": {"code", "message"}} in JSON."""

import http.client
import json

import pytest

from apikeys import crypto
from apikeys.models import ApiKey
from app import create_app
from tests.concurrency import every_connection_busy
from tests.conftest import bearer

pytestmark = pytest.mark.both_databases

URL = "/api/v1/org/api-keys"
LEAK = "s3cr3t-detail-that-must-not-leak"


def assert_error(response, status: int, code: str, details: bool = False) -> dict:
    """The response is the service's error object, and nothing else."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    expected = {"code", "message", "details"} if details else {"code", "message"}
    assert set(body["error"]) == expected
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(
    "path",
    [
        *("/nope", "/api/v1/org/api-key", "/api/v1/org/api-keys/some-id/rotate"),
        "/api/v2/org/api-keys",
        # Doubled slashes: no redirect (werkzeug's would be an HTML 308 to the client's Host).
        *("/api/v1//org/api-keys", "/api/v1/org/api-keys/key_x//roll", "/api/v1//auth/check"),
        "/api//docs",
    ],
)
def test_unknown_route_is_404(client, admin, path):
    assert_error(client.get(path, headers=bearer(admin.key)), 404, "not_found")
    assert_error(client.post(path, json={}), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", URL, {"GET", "POST"}),
        ("patch", URL, {"GET", "POST"}),
        ("delete", URL, {"GET", "POST"}),
        ("post", URL + "/key_abc", {"GET", "DELETE", "PATCH"}),
        ("put", URL + "/key_abc", {"GET", "DELETE", "PATCH"}),
        ("get", URL + "/key_abc/roll", {"POST"}),
        ("post", "/healthz", {"GET"}),
    ],
)
def test_wrong_method_is_405_with_allow(client, admin, method, path, allowed):
    response = getattr(client, method)(path, headers=bearer(admin.key), json={})
    assert_error(response, 405, "method_not_allowed")
    offered = {verb.strip() for verb in response.headers["Allow"].split(",")}
    assert allowed <= offered
    assert method.upper() not in offered


@pytest.mark.parametrize("path", [URL, URL + "/key_abc", URL + "/key_abc/roll", "/healthz"])
def test_options_answers_the_methods_with_no_content(client, path):
    response = client.options(path)
    assert response.status_code == 204
    assert response.data == b""
    assert "Content-Type" not in response.headers
    assert "OPTIONS" in {verb.strip() for verb in response.headers["Allow"].split(",")}
    assert response.headers["X-Request-ID"]


def test_oversized_body_is_413(client, admin):
    before = ApiKey.select().count()
    body = '{"name": "big", "scopes": ["read:billing"], "pad": "' + "x" * 70_000 + '"}'
    response = client.post(
        URL, headers=bearer(admin.key), data=body, content_type="application/json"
    )
    assert_error(response, 413, "payload_too_large")
    assert ApiKey.select().count() == before


def test_body_just_under_the_limit_is_read(client, admin):
    body = '{"name": "big", "scopes": ["read:billing"], "pad": "' + "x" * 60_000 + '"}'
    response = client.post(
        URL, headers=bearer(admin.key), data=body, content_type="application/json"
    )
    error = assert_error(response, 400, "invalid_request", details=True)
    assert set(error["details"]) == {"pad"}


@pytest.mark.parametrize("body", ['{"name": "CI",', "{'name': 'CI'}", "nul\x00l", "[" * 50_000])
def test_malformed_json_is_400(client, admin, body):
    response = client.post(
        URL, headers=bearer(admin.key), data=body, content_type="application/json"
    )
    error = assert_error(response, 400, "invalid_request", details=True)
    assert error["details"]


def test_validation_error_carries_details_per_field(client, admin):
    response = client.post(
        URL, headers=bearer(admin.key), json={"name": "", "scopes": [], "expires_in_days": 0}
    )
    error = assert_error(response, 400, "invalid_request", details=True)
    assert set(error["details"]) == {"name", "scopes", "expires_in_days"}
    assert all(error["details"].values())


def test_an_unknown_field_named_like_a_key_is_named_masked(client, admin):
    secret = crypto.generate_secret()
    body = {"name": "CI", "scopes": ["read:billing"], secret: 1}

    response = client.post(URL, headers=bearer(admin.key), json=body)

    error = assert_error(response, 400, "invalid_request", details=True)
    assert error["details"] == {crypto.MASK: ["Unknown field."]}
    assert secret[len(crypto.PREFIX) :] not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "CI", "scopes": ["nope"]}, 400, "invalid_scope"),
        ({"name": "admin", "scopes": ["read:billing"]}, 400, "name_taken"),
    ],
)
def test_domain_errors_have_the_same_shape(client, admin, body, status, code):
    assert_error(client.post(URL, headers=bearer(admin.key), json=body), status, code)


def test_auth_errors_have_the_same_shape(client, make_key):
    response = client.get(URL)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    reader = make_key(key_scopes=["read:billing"])
    assert_error(client.get(URL, headers=bearer(reader.key)), 403, "forbidden")
    assert_error(client.get(f"{URL}/key_unknown", headers=bearer(reader.key)), 403, "forbidden")


def test_unknown_key_id_has_the_same_shape(client, admin):
    assert_error(client.get(f"{URL}/key_unknown", headers=bearer(admin.key)), 404, "not_found")


def test_rate_limited_has_the_same_shape(app, client, admin):
    app.config["RATE_LIMIT_PER_KEY"] = "1/minute"
    assert client.get(URL, headers=bearer(admin.key)).status_code == 200
    response = client.get(URL, headers=bearer(admin.key))
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture
def boom(app):
    """A route that fails the way a bug would, registered before the first request."""

    def explode():
        raise RuntimeError(LEAK)

    app.add_url_rule("/boom", "boom", explode)
    return "/boom"


def assert_internal_error(response) -> None:
    assert_error(response, 500, "internal_error")
    text = response.get_data(as_text=True)
    for leak in (LEAK, "Traceback", "RuntimeError", "File ", ".py"):
        assert leak not in text


def test_uncaught_exception_is_500_without_details(client, boom):
    assert_internal_error(client.get(boom))


def test_uncaught_exception_is_logged_not_swallowed(client, boom, caplog):
    client.get(boom)
    logged = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert [str(error) for error in logged] == [LEAK]


def test_database_failure_is_503_without_details(app, client, admin):
    ApiKey.drop_table()
    response = client.get(URL, headers=bearer(admin.key))
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"
    for leak in ("api_key", "no such table", "does not exist", "peewee", "psycopg", "sqlite"):
        assert leak not in response.get_data(as_text=True).lower()


@pytest.mark.connection_pool
def test_no_free_database_connection_is_503(settings, admin):
    """Every pooled connection busy past the pool's timeout: shed load, don't crash."""
    app = create_app(settings | {"DATABASE_POOL_SIZE": 1, "DATABASE_POOL_TIMEOUT": 1})
    with every_connection_busy():
        response = app.test_client().get(URL, headers=bearer(admin.key))
    assert_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert app.test_client().get(URL, headers=bearer(admin.key)).status_code == 200


@pytest.mark.connection_pool
def test_health_and_docs_need_no_database_connection(settings):
    app = create_app(settings | {"DATABASE_POOL_SIZE": 1, "DATABASE_POOL_TIMEOUT": 1})
    with every_connection_busy():
        for path in ("/healthz", "/api/openapi.json"):
            assert app.test_client().get(path).status_code == 200


@pytest.mark.parametrize("padding", [0, 100_000])
def test_chunked_body_over_the_limit_is_413_not_cut_short(server, admin, padding):
    """A chunked body whose first 64 KiB are valid JSON must not be read as if it ended there."""
    body = b'{"name": "chunked", "scopes": ["read:billing"]}' + b" " * padding + b"GARBAGE"
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    headers = bearer(admin.key) | {"Content-Type": "application/json"}
    connection.request("POST", URL, body=iter([body]), headers=headers, encode_chunked=True)
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    expected = (413, "payload_too_large") if padding else (400, "invalid_request")
    assert (response.status, answer["error"]["code"]) == expected


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_says_so(client, admin, content_type):
    headers = bearer(admin.key) | ({"Content-Type": content_type} if content_type else {})
    body = '{"name": "CI", "scopes": ["read:billing"]}'
    response = client.post(URL, headers=headers, data=body)
    assert_error(response, 400, "invalid_request", details=True)
    assert "application/json" in response.json["error"]["message"]
