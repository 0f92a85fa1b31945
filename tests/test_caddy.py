"""deploy/Caddyfile in a real Caddy, in front of serve.py and a backend that echoes.

Caddy's forward_auth asks the check as Traefik's forwardAuth does, with
X-Forwarded-Method and X-Forwarded-Uri: these tests are where the check meets those two
headers from a real proxy. What a client sees through Caddy, and what the backend hears,
for each outcome of the check; and that no header a client adds reaches the backend or
widens what passes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from apikeys import crypto
from tests.conftest import bearer
from tests.proxy_contract import ProxyContract
from tests.servers import PROXIED_PER_KEY as PER_KEY
from tests.servers import (
    ROOT,
    Echoed,
    Key,
    Stack,
    assert_heard_only_the_check,
    assert_refused,
    configured,
    echo_backend,
    foreground,
    free_port,
    proxied_service,
    send,
    send_raw,
)

CADDY = "/usr/bin/caddy"
CONFIG = ROOT / "deploy" / "Caddyfile"
#: The lines of deploy/Caddyfile an operator edits.
SITE_LINE = "http://:80 {"
SERVICE_LINE = "forward_auth 127.0.0.1:8000 {"
BACKEND_LINE = "reverse_proxy 127.0.0.1:9000"


def caddyfile(directory: Path, port: int, service: int, backend: int) -> Path:
    """deploy/Caddyfile with the test's addresses in the lines an operator edits (the site
    on 127.0.0.1 only)."""
    return configured(
        CONFIG,
        directory / "Caddyfile",
        {
            SITE_LINE: f"http://:{port} {{\n\tbind 127.0.0.1",
            SERVICE_LINE: f"forward_auth 127.0.0.1:{service} {{",
            BACKEND_LINE: f"reverse_proxy 127.0.0.1:{backend}",
        },
    )


@contextmanager
def caddy(directory: Path, port: int, service: int, backend: int) -> Iterator[Path]:
    """The real Caddy in the foreground with deploy/Caddyfile; yields its log."""
    config = caddyfile(directory, port, service, backend)
    command = [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"]
    # Caddy's own files (its autosaved configuration, its storage) go with the test's.
    env = {
        "HOME": str(directory),
        "XDG_CONFIG_HOME": str(directory / "config"),
        "XDG_DATA_HOME": str(directory / "data"),
    }
    with foreground(command, directory / "caddy.log", port, env) as log:
        yield log


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    # One stack for the module: three servers are slow to start on a busy machine.
    with proxied_service(tmp_path_factory.mktemp("caddy"), caddy) as stack:
        yield stack


@pytest.fixture
def reader(stack) -> Key:
    """A key of its own for each test, that can read charge points and nothing else."""
    return stack.key("read:charge_points")


# What the check hears: Caddy's X-Forwarded-Method and X-Forwarded-Uri, nothing of the
# client's target.


def test_the_check_hears_the_request_as_caddy_saw_it(tmp_path):
    """A check that refuses with an echo of what it heard: the client sees that echo."""
    port = free_port()
    sent = [
        ("Authorization", "Bearer evk_abc"),
        ("X-Request-ID", "trace-7"),
        ("Content-Type", "application/json"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/api/v1/charge_points/1"),
        ("X-Required-Scope", "read:charge_points"),
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/api/v1/charge_points/1"),
        ("X_Required_Scope", "read:charge_points"),
        ("X-Auth-Scopes", "write:billing"),
    ]
    with (
        echo_backend(status=401) as check,
        echo_backend() as backend,
        caddy(tmp_path, port, check, backend),
    ):
        reply = Echoed(
            **vars(send(port, "POST", "/api/v1/billing/invoices?page=2", sent, b'{"a": 1}'))
        )
    assert reply.status == 401
    echoed = reply.json()
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("GET", "/api/v1/auth/check", "")
    assert reply.heard_values("X-Forwarded-Method") == ["POST"]
    assert reply.heard_values("X-Forwarded-Uri") == ["/api/v1/billing/invoices?page=2"]
    assert reply.heard_values("Authorization") == ["Bearer evk_abc"]
    assert reply.heard_values("X-Request-ID") == ["trace-7"]
    assert reply.heard_values("X-Forwarded-For") == ["127.0.0.1"]
    names = reply.heard_names()
    assert "content-length" not in names
    assert not {"x-required-scope", "x-original-method", "x-original-uri"} & set(names)
    assert not [name for name in names if "_" in name or name.startswith("x-auth-")]


# What a client sees for each outcome.


def test_a_valid_key_reaches_the_backend_with_the_checks_identity(stack, reader):
    reply = stack.request(
        "GET",
        "/api/v1/charge_points/cp-1?page=2",
        {**bearer(reader.secret), "X-Request-ID": "trace-42"},
    )
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/api/v1/charge_points/cp-1?page=2"
    assert_heard_only_the_check(reply, reader, "read:charge_points")
    assert reply.heard_values("X-Request-ID") == ["trace-42"]
    # What the check counted, though forward_auth passes no header of a 2xx answer on.
    assert reply.headers["RateLimit-Limit"] == str(PER_KEY)
    assert int(reply.headers["RateLimit-Remaining"]) < PER_KEY
    assert 0 < int(reply.headers["RateLimit-Reset"]) <= 61


def test_the_backend_hears_the_checks_request_id(stack, reader):
    """A malformed id is replaced by the check; the backend hears the check's."""
    reply = stack.request(
        "GET", "/api/v1/charge_points/cp-1", {**bearer(reader.secret), "X-Request-ID": "bad id!"}
    )
    assert reply.status == 200, reply.body
    [request_id] = reply.heard_values("X-Request-ID")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", request_id)
    logged = [json.loads(line) for line in stack.service.log().splitlines() if request_id in line]
    assert [line["path"] for line in logged] == ["/api/v1/auth/check"]


class TestWhatEveryProxyHolds(ProxyContract):
    """tests/proxy_contract.py, with Caddy in front."""


def test_a_refusal_carries_caddys_server_alone_and_no_x_auth_error(stack):
    reply = stack.request("GET", "/api/v1/charge_points/cp-1")
    assert_refused(reply, 401, "unauthorized")
    assert reply.headers.get_all("Server") == ["Caddy"]
    assert "X-Auth-Error" not in reply.headers


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/api/v1/billing/invoices/7", 200),
        ("HEAD", "/api/v1/charge_points/cp-1", 200),
        ("OPTIONS", "/api/v1/charge_points", 200),
        ("DELETE", "/api/v1/charge_points/cp-1", 403),
        ("POST", "/api/v1/billing/invoices", 403),
        ("GET", "/api/v1/org/api-keys", 403),
    ],
)
def test_the_route_policy_judges_the_forwarded_method_and_uri(stack, method, path, status):
    """The check knows the target only from forward_auth's X-Forwarded-Method and -Uri."""
    key = stack.key("read:charge_points", "read:billing")
    reply = stack.request(method, path, bearer(key.secret))
    if status == 200:
        assert reply.status == 200, reply.body
        if method != "HEAD":
            assert (reply.json()["method"], reply.json()["path"]) == (method, path)
    else:
        assert_refused(reply, 403, "forbidden")


# What a client adds: never reaches the backend, never widens, never a 5xx.


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_repeated_key_header_is_refused(stack, reader, header):
    """Caddy passes both copies on; the check refuses them, even both valid."""
    value = f"Bearer {reader.secret}" if header == "Authorization" else reader.secret
    for pairs in ([(header, value), (header, value)], [(header, value), (header, "evk_b")]):
        reply = stack.request("GET", "/api/v1/charge_points/cp-1", pairs)
        error = assert_refused(reply, 400, "invalid_request")
        assert header in error["error"]["message"]


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/v1/charge_points/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /api/v1/charge_points/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /api/v1/charge_points/1 HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n",
    ],
    ids=["garbage", "bad-escape", "two-hosts", "header-without-colon"],
)
def test_a_request_caddy_cannot_read_is_its_own_400(stack, data):
    """Go's HTTP server refuses these before Caddy's handlers, with a plain-text 400 that
    no configuration can change: never reaching the check or the backend."""
    status, headers, body = send_raw(stack.port, data)
    assert status == 400, body
    assert headers["Content-Type"].startswith("text/plain")


def test_the_service_down_is_a_503_in_the_services_shape(tmp_path):
    """Not the client's doing: Caddy cannot reach the check, and says so in JSON."""
    port = free_port()
    with echo_backend() as backend, caddy(tmp_path, port, free_port(), backend):
        reply = send(port, "GET", "/api/v1/charge_points/cp-1", bearer(crypto.generate_secret()))
    assert reply.status == 503
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.error_code() == "service_unavailable"
    assert reply.headers["Cache-Control"] == "no-store"


def test_a_2xx_that_is_not_the_checks_answer_is_a_503(tmp_path):
    """forward_auth pointed at something that answers 200 without the check's headers
    (Caddy 2.6 would pass the request on with the text of each placeholder as its value)."""
    port = free_port()
    with (
        echo_backend() as not_the_check,
        echo_backend() as backend,
        caddy(tmp_path, port, not_the_check, backend),
    ):
        reply = send(port, "GET", "/api/v1/charge_points/cp-1", [("X-Auth-Key-Id", "key-evil")])
    assert reply.status == 503, reply.body
    assert reply.error_code() == "service_unavailable"


def test_no_key_is_written_in_caddys_log(tmp_path):
    """Caddy logs each request with its headers: never a key, allowed, refused or failed."""
    port = free_port()
    secret = crypto.generate_secret()
    up, down = tmp_path / "up", tmp_path / "down"
    up.mkdir()
    down.mkdir()
    with echo_backend() as backend:
        with proxied_service(up, caddy) as stack:
            key = stack.key("read:charge_points")
            # Under any spelling: Caddy logs X_API_KEY as X_api_key.
            sent = [bearer(key.secret), {"X-API-Key": key.secret}, {"X-API-Key": secret}]
            sent += [{name: secret} for name in ("X_API_KEY", "X-Api_Key", "x_api-key")]
            for headers in sent:
                stack.request("GET", "/api/v1/charge_points/cp-1", headers)
                stack.request("POST", "/api/v1/charge_points", headers)
            log = stack.log.read_text()
        with caddy(down, port, free_port(), backend) as down_log:
            for headers in (bearer(secret), {"X-API-Key": secret}):
                assert send(port, "GET", "/api/v1/charge_points/cp-1", headers).status == 503
        log += down_log.read_text()
    assert '"uri":"/api/v1/charge_points/cp-1"' in log
    assert key.secret not in log and secret not in log


def test_the_caddyfile_is_as_caddy_writes_it_with_no_admin_endpoint(tmp_path):
    """``caddy fmt`` leaves it as it is; adapted, Caddy's admin API is off."""
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    formatted = subprocess.run(
        [CADDY, "fmt", str(CONFIG)], capture_output=True, text=True, check=True, env=env
    )
    assert formatted.stdout == CONFIG.read_text()
    adapted = subprocess.run(
        [CADDY, "adapt", "--config", str(CONFIG), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert json.loads(adapted.stdout)["admin"] == {"disabled": True}
    assert "not formatted" not in adapted.stderr
