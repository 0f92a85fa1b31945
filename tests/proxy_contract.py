"""What every proxy configuration in deploy/ holds in front of the check, the same way.

Each proxy's test module subclasses ``ProxyContract``; pytest runs the tests there with
that module's fixtures: ``stack`` (the proxy in front of serve.py and an echoing backend)
and ``reader`` (a key of its own that reads charge points and nothing else).
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from apikeys import crypto
from tests.conftest import bearer
from tests.servers import PROXIED_PER_KEY as PER_KEY
from tests.servers import (
    SPOOFED,
    UNAUTHORIZED,
    WIDENING,
    Key,
    Stack,
    assert_heard_only_the_check,
    assert_refused,
    spoofed_id,
)

#: What a client may send through any proxy, and gets no 5xx for.
NEVER_A_5XX = {
    "bogus-scope": [("X-Required-Scope", "bogus")],
    "lone-forwarded-method": [("X-Forwarded-Method", "POST")],
    "long-original-uri": [("X-Original-URI", "x" * 7000)],
    "header-over-8k": [("X-Big", "x" * 9000)],
    "headers-over-32k": [(f"X-Many-{i}", "y" * 1000) for i in range(40)],
    "long-authorization": [("Authorization", "Bearer " + "a" * 7000)],
    "bad-request-id": [("X-Request-ID", "bad id\t!")],
}


def assert_not_a_5xx(stack: Stack, reader: Key, headers: list[tuple[str, str]]) -> None:
    """``headers`` sent with the reader's key (unless they present one): no 5xx, and any
    refusal in the service's shape."""
    presents_a_key = {name.lower() for name, _ in headers} & {"authorization", "x-api-key"}
    key = [] if presents_a_key else list(bearer(reader.secret).items())
    reply = stack.request("GET", "/api/v1/charge_points/cp-1", key + headers)
    assert reply.status < 500, (reply.status, reply.body)
    if reply.status >= 400:
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.json()["error"]["code"]


class ProxyContract:
    def test_a_query_with_commas_reaches_the_backend(self, stack, reader):
        path = "/api/v1/charge_points?ids=cp-1,cp-2"
        reply = stack.request("GET", path, bearer(reader.secret))
        assert reply.status == 200, reply.body
        assert reply.json()["path"] == path

    def test_a_key_without_the_scope_gets_the_services_403(self, stack, reader):
        reply = stack.request(
            "POST", "/api/v1/charge_points", {**bearer(reader.secret), "X-Request-ID": "trace-43"}
        )
        error = assert_refused(reply, 403, "forbidden")
        assert reply.headers["X-Request-ID"] == "trace-43"
        assert "write:charge_points" in error["error"]["message"]
        assert reply.headers["RateLimit-Limit"] == str(PER_KEY)

    @pytest.mark.parametrize("spoofed", SPOOFED, ids=spoofed_id)
    def test_a_clients_own_check_headers_never_reach_the_backend(self, stack, reader, spoofed):
        reply = stack.request(
            "GET", "/api/v1/charge_points/cp-1", [*bearer(reader.secret).items(), *spoofed]
        )
        assert reply.status == 200, reply.body
        assert_heard_only_the_check(reply, reader, "read:charge_points")

    @pytest.mark.parametrize("method, path, spoofed", WIDENING.values(), ids=WIDENING)
    def test_a_clients_own_check_headers_never_widen(self, stack, reader, method, path, spoofed):
        reply = stack.request(method, path, [*bearer(reader.secret).items(), *spoofed])
        assert_refused(reply, 403, "forbidden")

    @pytest.mark.parametrize(
        "method, path",
        [
            ("GET", "/admin"),
            ("POST", "/api/v1/analytics/reports"),
            ("FOO", "/api/v1/charge_points/cp-1"),
            ("GET", "/api/v1/charge_points/../billing/invoices"),
            ("GET", "/api/v1/charge_points/%2e%2e/billing"),
            ("GET", "/api/v1/charge_points/a%2Fb"),
            ("GET", "/api/v1/charge_points/a,/api/v1/billing/x"),
        ],
    )
    def test_a_route_the_policy_does_not_know_is_403(self, stack, reader, method, path):
        reply = stack.request(method, path, bearer(reader.secret))
        assert_refused(reply, 403, "forbidden")

    def test_a_rate_limited_key_gets_the_services_429(self, stack):
        limited = stack.key("read:charge_points")
        # Each of the two workers counts its own budget (no Redis here), and a sliding
        # window's rollover frees a unit or two: so not exactly twice the limit.
        replies = []
        while len(replies) < 3 * PER_KEY and (not replies or replies[-1].status == 200):
            replies.append(
                stack.request("GET", "/api/v1/charge_points/cp-1", bearer(limited.secret))
            )
        reply = replies[-1]
        assert len(replies) > PER_KEY, "refused before the first worker's budget ran out"
        assert_refused(reply, 429, "rate_limited")
        assert reply.json()["error"]["message"].startswith("Too many requests")
        assert 0 < int(reply.headers["Retry-After"]) <= 61
        assert reply.headers["RateLimit-Limit"] == str(PER_KEY)
        assert reply.headers["RateLimit-Remaining"] == "0"
        assert 0 < int(reply.headers["RateLimit-Reset"]) <= 61
        assert reply.headers.get_all("RateLimit-Limit") == [str(PER_KEY)]

    def test_a_write_reaches_the_backend_with_its_body(self, stack):
        writer = stack.key("write:charge_points")
        body = json.dumps({"name": "CP 7"}).encode()
        headers = {**bearer(writer.secret), "Content-Type": "application/json"}
        reply = stack.request("POST", "/api/v1/charge_points", headers, body)
        assert reply.status == 200, reply.body
        assert (reply.json()["method"], reply.json()["body"]) == ("POST", '{"name": "CP 7"}')
        assert reply.heard_values("X-Auth-Scopes") == ["write:charge_points"]

    @pytest.mark.parametrize(
        "headers",
        [{}, bearer("not-a-key"), bearer(crypto.generate_secret()), {"X-API-Key": "evk_nope"}],
        ids=["no-key", "malformed", "unknown", "x-api-key"],
    )
    def test_without_a_valid_key_the_client_gets_the_services_401(self, stack, headers):
        reply = stack.request("GET", "/api/v1/charge_points/cp-1", headers)
        assert_refused(reply, 401, "unauthorized")
        assert reply.json() == UNAUTHORIZED
        assert reply.headers.get_all("WWW-Authenticate") == ['Bearer realm="api"']

    @pytest.mark.parametrize("headers", NEVER_A_5XX.values(), ids=NEVER_A_5XX)
    def test_nothing_a_client_sends_is_a_5xx(self, stack, reader, headers):
        assert_not_a_5xx(stack, reader, headers)

    def test_the_largest_headers_a_client_may_send_are_no_5xx(self, stack, reader):
        # Forwarded to the check: the URI and the user agent, each near a header line's
        # limit (nginx's is 8 KB), and both key headers.
        path = "/api/v1/charge_points/cp-1?q=" + "q" * 8000
        allowed = stack.request("GET", path, {**bearer(reader.secret), "User-Agent": "u" * 8000})
        refused = stack.request(
            "GET",
            "/api/v1/charge_points/cp-1",
            {
                "X-API-Key": "k" * 6000,
                "Authorization": "Bearer " + "b" * 6000,
                "User-Agent": "u" * 6000,
            },
        )

        assert allowed.status == 200, allowed.body
        assert_refused(refused, 401, "unauthorized")

    def test_a_websocket_handshake_reaches_the_backend_once_the_check_allows_it(
        self, stack, reader
    ):
        handshake = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        allowed = stack.request(
            "GET", "/api/v1/charge_points/cp-1", {**bearer(reader.secret), **handshake}
        )
        refused = stack.request("GET", "/api/v1/charge_points/cp-1", handshake)

        # The echo backend answers it as a GET; what matters is that it heard the upgrade.
        assert allowed.status == 200, allowed.body
        assert allowed.heard_values("Upgrade") == ["websocket"]
        assert [value.lower() for value in allowed.heard_values("Connection")] == ["upgrade"]
        assert_heard_only_the_check(allowed, reader, "read:charge_points")
        assert_refused(refused, 401, "unauthorized")

    def test_a_raw_fragment_in_the_uri_is_denied(self, stack, reader):
        # nginx passes it on as it came: a backend could resolve the dot segments after it.
        path = "/api/v1/charge_points/cp-1#/../../billing/inv-1"
        assert_refused(stack.request("GET", path, bearer(reader.secret)), 403, "forbidden")

    def test_no_key_a_client_sends_is_written_in_the_proxys_log(self, stack, reader):
        sent = [
            ("GET", f"/api/v1/charge_points/cp-1?api_key={reader.secret}", {}),
            ("GET", f"/api/v1/charge_points/{reader.secret}", {}),
            ("GET", "/api/v1/charge_points/cp-1", {"User-Agent": f"sdk {reader.secret}"}),
            ("GET", "/api/v1/charge_points/cp-1", {"Referer": f"https://x/?k={reader.secret}"}),
            ("GET", "/api/v1/charge_points/cp-1", {"X_API_KEY": reader.secret}),
            ("GET", "/api/v1/charge_points/cp-1", {"Authorization": _basic(reader.secret)}),
        ]
        for method, path, headers in sent:
            stack.request(method, path, {**bearer(reader.secret), **headers})
        stack.request("GET", "/api/v1/charge_points/after-the-keys")

        # A proxy writes a request's line after its answer: read once the last one is in.
        marker, deadline = "/api/v1/charge_points/after-the-keys", time.monotonic() + 5
        while marker not in (log := stack.log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker in log
        assert reader.secret not in log
        assert reader.secret[len(crypto.PREFIX) :] not in log


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()
