"""deploy/nginx.conf in a real nginx, in front of serve.py and a backend that echoes.

What a client sees through nginx, and what the backend hears, for each outcome of the
check; and that no header a client adds reaches the backend or widens what passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import bearer
from tests.proxy_contract import ProxyContract, assert_not_a_5xx
from tests.servers import (
    CHECK_INPUTS,
    ROOT,
    Key,
    Stack,
    configured,
    echo_backend,
    foreground,
    free_port,
    proxied_service,
    send,
    send_raw,
)
from tests.servers import PROXIED_PER_KEY as PER_KEY

NGINX = "/usr/sbin/nginx"
CONFIG = ROOT / "deploy" / "nginx.conf"
#: The lines of deploy/nginx.conf an operator edits.
SERVICE_LINE = "server 127.0.0.1:8000;"
BACKEND_LINE = "server 127.0.0.1:9000;"
LISTEN_LINE = "listen 80;"


def nginx_conf(directory: Path, port: int, service: int, backend: int) -> Path:
    """deploy/nginx.conf with the test's addresses in the lines an operator edits."""
    return configured(
        CONFIG,
        directory / "nginx.conf",
        {
            LISTEN_LINE: f"listen 127.0.0.1:{port};",
            SERVICE_LINE: f"server 127.0.0.1:{service};",
            BACKEND_LINE: f"server 127.0.0.1:{backend};",
        },
    )


@contextmanager
def nginx(directory: Path, port: int, service: int, backend: int) -> Iterator[Path]:
    """The real nginx in the foreground with deploy/nginx.conf; yields its log."""
    config = nginx_conf(directory, port, service, backend)
    command = [NGINX, "-p", f"{directory}/", "-c", str(config), "-e", "stderr"]
    command += ["-g", f"daemon off; pid {directory}/nginx.pid;"]
    with foreground(command, directory / "nginx.log", port) as log:
        yield log


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    # One stack for the module: three servers are slow to start on a busy machine.
    with proxied_service(tmp_path_factory.mktemp("nginx"), nginx) as stack:
        yield stack


@pytest.fixture
def reader(stack) -> Key:
    """A key of its own for each test, that can read charge points and nothing else."""
    return stack.key("read:charge_points")


# What a client sees for each outcome.


def test_a_valid_key_reaches_the_backend_with_the_checks_identity(stack, reader):
    reply = stack.request(
        "GET",
        "/api/v1/charge_points/cp-1?page=2",
        {**bearer(reader.secret), "X-Request-ID": "trace-42"},
    )
    assert reply.status == 200, reply.body
    assert reply.json()["path"] == "/api/v1/charge_points/cp-1?page=2"
    heard = reply.heard()
    assert ("X-Auth-Org-Id", reader.org_id) in heard
    assert ("X-Auth-Key-Id", reader.id) in heard
    assert ("X-Auth-Scopes", "read:charge_points") in heard
    assert ("X-Request-ID", "trace-42") in heard
    assert not {name.lower() for name in CHECK_INPUTS} & set(reply.heard_names())
    assert reply.headers["RateLimit-Limit"] == str(PER_KEY)
    assert int(reply.headers["RateLimit-Remaining"]) < PER_KEY


class TestWhatEveryProxyHolds(ProxyContract):
    """tests/proxy_contract.py, with nginx in front."""


# What a client adds: never reaches the backend, never widens, never a 5xx.


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
        [("X-API-Key", "evk_a"), ("X-API-Key", "evk_b")],
        [("Host", "a"), ("Host", "b")],
        [("Content-Length", str(2 * 1024 * 1024))],
    ],
    ids=["two-authorizations", "two-api-keys", "two-hosts", "body-over-1m"],
)
def test_what_nginx_itself_refuses_is_not_a_5xx_either(stack, reader, headers):
    assert_not_a_5xx(stack, reader, headers)


def test_the_service_down_is_a_503_in_the_services_shape(tmp_path):
    """Not the client's doing: nginx cannot reach the check, and says so in JSON."""
    port = free_port()
    with echo_backend() as backend, nginx(tmp_path, port, free_port(), backend):
        reply = send(port, "GET", "/api/v1/charge_points/cp-1")
    assert reply.status == 503
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()["error"]["code"] == "service_unavailable"


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
        b"GET /api/v1/charge_points/%zz HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /api/v1/charge_points/a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /api/v1/charge_points/1 HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET /api/v1/charge_points/1 HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n",
        b"GET /api/v1/charge_points/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=[
        "garbage",
        "binary",
        "bad-escape",
        "control-char",
        "http-9.9",
        "header-without-colon",
        "uri-over-8k",
    ],
)
def test_a_request_nginx_cannot_read_is_a_400_in_the_services_shape(stack, data):
    status, headers, body = send_raw(stack.port, data)
    assert status == 400, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "target",
    [b"/api/v1/charge_points/caf\xc3\xa9", b"/api/v1/charge_points/1?q=caf\xc3\xa9"],
    ids=["path", "query"],
)
def test_a_uri_of_raw_non_ascii_bytes_is_denied_not_blamed_on_the_proxy(stack, reader, target):
    """nginx passes the client's request line on as it came; a URI the check cannot read
    is one the route policy cannot judge: denied, never a proxy's missing header."""
    key = f"Authorization: Bearer {reader.secret}\r\n".encode()
    data = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n" + key + b"\r\n"
    status, headers, body = send_raw(stack.port, data)
    assert status == 403, body
    assert json.loads(body)["error"]["code"] == "forbidden"
