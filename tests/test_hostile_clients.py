"""Hostile clients against the production server (serve.py, two workers, on SQLite).

Slow request bodies must hold no thread, headers that repeat or alias a header the check
reads must never widen what passes, oversized requests get JSON answers, and every request
is answered within the server's deadline. See apikeys/serving.py for the bounds.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import pytest

from apikeys import crypto
from apikeys.serving import BODY_TIMEOUT, MAX_HEADER_BYTES, SHUTDOWN_GRACE
from tests.conftest import REDIS_URL, bearer
from tests.servers import Answer, production, send
from tests.test_check import PATH_TRICKS
from tests.test_logs_production import request_lines, wait_for
from tests.wsgi_apps import IMPATIENT_COMMIT_PATIENCE, IMPATIENT_TIMEOUT

CHECK = "/api/v1/auth/check"
KEYS = "/api/v1/org/api-keys"
#: How soon a request that waits on nothing must be answered, with a wide margin.
PROMPT = 1.0
SLOW_CLIENTS = 8


def raw_exchange(port: int, head: bytes, chunks: Iterable[bytes] = ()) -> Answer:
    """Send ``head`` and then ``chunks`` over a raw socket; read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest: read its answer
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.headers, response.read())


@pytest.fixture(scope="module")
def admin_secret() -> str:
    return crypto.generate_secret()


@pytest.fixture(scope="module")
def service(tmp_path_factory, admin_secret) -> Iterator[int]:
    """The service under serve.py; yields its port."""
    tmp_path = tmp_path_factory.mktemp("service")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": admin_secret,
        # The server's counters have no per-test prefix: keep clear of other users' budgets.
        "RATE_LIMIT_PER_KEY": "100000/minute",
        "RATE_LIMIT_FAILED_AUTH": "100000/minute",
    }
    with production(tmp_path, env, workers=2) as server:
        yield server.port


@pytest.fixture(scope="module")
def billing_reader(service, admin_secret) -> str:
    """The secret of a key holding only read:billing."""
    created = send(
        service,
        "POST",
        KEYS,
        [*bearer(admin_secret).items(), ("Content-Type", "application/json")],
        json.dumps({"name": "billing-reader", "scopes": ["read:billing"]}).encode(),
    )
    assert created.status == 201, created.body
    return json.loads(created.body)["key"]


@pytest.fixture(scope="module")
def echo(tmp_path_factory) -> Iterator[int]:
    """serve.py serving tests.wsgi_apps:echo; yields its port."""
    with production(tmp_path_factory.mktemp("echo"), {}, target="tests.wsgi_apps:echo") as server:
        yield server.port


# Slow clients


class SlowBody(threading.Thread):
    """A POST whose body arrives one byte a second: what did the server answer, when?"""

    def __init__(self, port: int, secret: str, give_up: float) -> None:
        super().__init__(daemon=True)
        self.port, self.secret, self.give_up = port, secret, give_up
        self.answer: Answer | None = None
        self.closed = False
        self.elapsed = 0.0

    def run(self) -> None:
        body = json.dumps({"name": "slow", "scopes": ["read:billing"]}).encode()
        head = (
            f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.secret}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.give_up) as sock:
            sock.sendall(head)
            for byte in body:
                if time.monotonic() - began > self.give_up:
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    self.closed = True
                    break
                sock.settimeout(1.0)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the server has answered
                    self.closed = True
                    break
                except TimeoutError:
                    continue
            sock.settimeout(5)
            try:
                response = http.client.HTTPResponse(sock)
                response.begin()
                self.answer = Answer(response.status, response.headers, response.read())
            except (OSError, http.client.HTTPException):
                self.closed = True
            self.elapsed = time.monotonic() - began


def timed(port: int, method: str, path: str, headers: Iterable[tuple[str, str]] = ()):
    began = time.monotonic()
    answer = send(port, method, path, headers)
    return answer, time.monotonic() - began


def test_slow_request_bodies_hold_no_thread_and_time_out(service, admin_secret, billing_reader):
    """8 tenants trickling bodies (2 workers x 2 threads, held forever by granian's WSGI)."""
    give_up = BODY_TIMEOUT + 10
    slow = [SlowBody(service, admin_secret, give_up) for _ in range(SLOW_CLIENTS)]
    for client in slow:
        client.start()
    time.sleep(1.5)  # every slow client has sent its headers and started its body
    check = [*bearer(billing_reader).items(), ("X-Required-Scope", "read:billing")]
    rounds_until = time.monotonic() + BODY_TIMEOUT / 2
    rounds = 0
    while time.monotonic() < rounds_until:
        for path, headers in (("/healthz", ()), ("/readyz", ()), (CHECK, check)):
            answer, elapsed = timed(service, "GET", path, headers)
            assert answer.status == 200, (path, answer.body)
            assert elapsed < PROMPT, f"{path} took {elapsed:.2f} s behind slow bodies"
        rounds += 1
    assert any(client.is_alive() for client in slow), "the slow clients ended too early"
    for client in slow:
        client.join(give_up + 5)
    for client in slow:
        assert client.elapsed < BODY_TIMEOUT + 5, client.elapsed
        if client.answer is not None:  # the server may also just close the connection
            assert client.answer.status == 408
            assert client.answer.error_code() == "request_timeout"
            assert client.answer.headers["Connection"] == "close"
        else:
            assert client.closed
    assert rounds >= 3


# Headers that would widen the check


def route_target(convention: str, method: str, uri: str) -> list[tuple[str, str]]:
    prefix = {"nginx": "X-Original", "traefik": "X-Forwarded"}[convention]
    uri_name = "X-Original-URI" if convention == "nginx" else "X-Forwarded-Uri"
    return [(f"{prefix}-Method", method), (uri_name, uri)]


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("X-Original-URI", "/api/v1/billing/x", KEYS),
        ("X-Original-URI", KEYS, "/api/v1/billing/x"),
        ("X-Forwarded-Uri", "/api/v1/billing/x", KEYS),
        ("X-Original-Method", "GET", "POST"),
        ("X-Forwarded-Method", "GET", "DELETE"),
        ("X-Required-Scope", "read:billing", "write:billing"),
    ],
)
def test_a_check_header_sent_twice_is_an_invalid_request(
    service, billing_reader, name, first, second
):
    target = {
        "X-Original-URI": route_target("nginx", "GET", first),
        "X-Original-Method": route_target("nginx", first, "/api/v1/billing/x"),
        "X-Forwarded-Uri": route_target("traefik", "GET", first),
        "X-Forwarded-Method": route_target("traefik", first, "/api/v1/billing/x"),
        "X-Required-Scope": [("X-Required-Scope", first)],
    }[name]
    headers = [*bearer(billing_reader).items(), *target, (name, second)]
    answer = send(service, "GET", CHECK, headers)
    assert answer.status == 400, answer.body
    assert answer.error_code() == "invalid_request"
    assert name in json.loads(answer.body)["error"]["message"]


@pytest.mark.parametrize(
    ("method_header", "uri_header"),
    [("X-Original-Method", "X-Original-URI"), ("X-Forwarded-Method", "X-Forwarded-Uri")],
)
def test_a_uri_header_that_is_not_ascii_is_denied(
    service, billing_reader, method_header, uri_header
):
    """granian hides the value; the check sees the header there and cannot judge it."""
    head = (
        f"GET {CHECK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {billing_reader}\r\n"
        f"{method_header}: GET\r\n{uri_header}: /api/v1/billing/café\r\n\r\n"
    ).encode()
    answer = raw_exchange(service, head)
    assert (answer.status, answer.error_code()) == (403, "forbidden"), answer.body


@pytest.mark.parametrize("path", [CHECK, "/api/v1/org/api-keys"])
@pytest.mark.parametrize(
    "good, unreadable",
    [
        ("Authorization: Bearer {}", "X-API-Key: \xe9"),
        ("X-API-Key: {}", "Authorization: Bearer \xe9"),
    ],
)
def test_a_second_credential_that_is_not_ascii_is_refused(
    service, billing_reader, path, good, unreadable
):
    """granian hides its value: it may be another key, so neither is taken (two keys, 401)."""
    head = (
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\n{good.format(billing_reader)}\r\n"
            f"X-Required-Scope: read:billing\r\n"
        ).encode()
        + unreadable.encode("latin-1")
        + b"\r\n\r\n"
    )
    answer = raw_exchange(service, head)
    assert (answer.status, answer.error_code()) == (401, "unauthorized"), answer.body


@pytest.mark.parametrize("name", ["Authorization", "X-API-Key"])
def test_a_key_header_sent_twice_is_an_invalid_request(service, admin_secret, billing_reader, name):
    value = {"Authorization": "Bearer {}", "X-API-Key": "{}"}[name]
    headers = [
        (name, value.format(billing_reader)),
        (name, value.format(admin_secret)),
        ("X-Required-Scope", "write:api_keys"),
    ]
    answer = send(service, "GET", CHECK, headers)
    assert answer.status == 400, answer.body
    assert name in json.loads(answer.body)["error"]["message"]


@pytest.mark.parametrize(
    ("real", "alias"),
    [
        (("X-Original-URI", KEYS), ("X_Original_URI", "/api/v1/billing/x")),
        (("X-Forwarded-Uri", KEYS), ("X_Forwarded_Uri", "/api/v1/billing/x")),
        (("X-Required-Scope", "write:billing"), ("X_Required_Scope", "read:billing")),
    ],
)
@pytest.mark.parametrize("alias_first", [False, True])
def test_an_underscore_alias_cannot_stand_in_for_a_check_header(
    service, billing_reader, real, alias, alias_first
):
    """The proxy sends the real header; the client adds an alias for what its key holds."""
    method = {"X-Original-URI": "X-Original-Method", "X-Forwarded-Uri": "X-Forwarded-Method"}
    target = [(method[real[0]], "GET")] if real[0] in method else []
    pair = [alias, real] if alias_first else [real, alias]
    answer = send(service, "GET", CHECK, [*bearer(billing_reader).items(), *target, *pair])
    assert answer.status == 403, answer.body
    assert answer.error_code() == "forbidden"


def test_underscore_headers_never_reach_the_app(echo):
    answer = send(echo, "GET", "/", [("X-Original-URI", "/a"), ("X_Original_URI", "/b")])
    assert json.loads(answer.body)["headers"]["HTTP_X_ORIGINAL_URI"] == "/a"


@pytest.mark.parametrize(
    ("real", "alias"),
    [
        (("X-Original-URI", KEYS), ("X_Original_URI", "/api/v1/billing/x")),
        (("X-Required-Scope", "write:billing"), ("X_Required_Scope", "read:billing")),
    ],
)
def test_an_underscore_alias_cannot_widen_under_the_dev_server(server, make_key, real, alias):
    """``make run``'s werkzeug server drops such headers too (``server``: conftest's)."""
    reader = make_key(key_scopes=["read:billing"])
    target = [("X-Original-Method", "GET")] if real[0] == "X-Original-URI" else []
    answer = send(server, "GET", CHECK, [*bearer(reader.key).items(), *target, real, alias])
    assert answer.status == 403, answer.body


def test_a_uri_sent_twice_cannot_widen_under_the_dev_server(server, make_key):
    """werkzeug's server joins the copies and says nothing: the comma is refused."""
    reader = make_key(key_scopes=["read:billing"])
    target = [("X-Original-Method", "GET"), ("X-Original-URI", "/api/v1/billing/x")]
    answer = send(
        server, "GET", CHECK, [*bearer(reader.key).items(), *target, ("X-Original-URI", KEYS)]
    )
    assert answer.status == 403, answer.body


def test_repeated_headers_are_joined_and_named(echo):
    answer = send(
        echo, "GET", "/", [("X-A", "1"), ("X-A", "2"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    )
    environ = json.loads(answer.body)
    assert environ["headers"]["HTTP_X_A"] == "1,2"
    assert environ["headers"]["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["repeated"] == ["cookie", "x-a"]


@pytest.fixture(scope="module")
def path_reader(service, admin_secret) -> str:
    """The secret of a key that reads charge points and billing, as in test_check.py."""
    created = send(
        service,
        "POST",
        KEYS,
        [*bearer(admin_secret).items(), ("Content-Type", "application/json")],
        json.dumps(
            {"name": "path-reader", "scopes": ["read:charge_points", "read:billing"]}
        ).encode(),
    )
    assert created.status == 201, created.body
    return json.loads(created.body)["key"]


@pytest.mark.parametrize(("uri", "status"), PATH_TRICKS)
@pytest.mark.parametrize("convention", ["nginx", "traefik"])
def test_path_tricks_do_not_fool_the_policy_on_the_server(
    service, path_reader, uri, status, convention
):
    headers = [*bearer(path_reader).items(), *route_target(convention, "GET", uri)]
    assert send(service, "GET", CHECK, headers).status == status


# Oversized requests


def test_oversized_headers_get_a_json_431(service, billing_reader):
    big = "a" * (MAX_HEADER_BYTES + 1)
    answer = send(service, "GET", CHECK, [*bearer(billing_reader).items(), ("X-Big", big)])
    assert answer.status == 431
    assert answer.error_code() == "headers_too_large"


def test_many_headers_adding_up_to_too_much_get_a_json_431(service):
    # Fewer lines than granian's limit (100), more bytes than the service's.
    headers = [(f"X-Filler-{n}", "a" * (MAX_HEADER_BYTES // 80)) for n in range(90)]
    answer = send(service, "GET", "/readyz", headers)
    assert answer.status == 431
    assert answer.error_code() == "headers_too_large"


def test_a_chunked_body_over_the_limit_gets_a_json_413(service, admin_secret):
    head = (
        f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_secret}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)
    answer = raw_exchange(service, head, [chunk] * 9 + [b"0\r\n\r\n"])
    assert answer.status == 413
    assert answer.error_code() == "payload_too_large"


def test_a_chunked_body_under_the_limit_is_read_whole(service, admin_secret):
    body = json.dumps({"name": "chunked", "scopes": ["read:billing"]}).encode()
    head = (
        f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_secret}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunks = [b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])]
    answer = raw_exchange(service, head, [*chunks, b"0\r\n\r\n"])
    assert answer.status == 201, answer.body


def test_a_declared_length_over_the_limit_is_refused_before_the_body(service, admin_secret):
    head = (
        f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_secret}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    began = time.monotonic()
    answer = raw_exchange(service, head)  # and no body at all
    assert time.monotonic() - began < PROMPT
    assert answer.status == 413
    assert answer.error_code() == "payload_too_large"


# The request deadline


def test_a_request_past_the_deadline_gets_503_and_liveness_never_waits(tmp_path):
    with production(tmp_path, {}, target="tests.wsgi_apps:impatient") as server:
        results: dict[str, tuple[Answer, float]] = {}

        def sleeper(name: str) -> None:
            headers = [("X-Request-ID", f"late-{name}")]
            results[name] = timed(server.port, "GET", "/sleep?seconds=4", headers)

        # One thread per worker, two workers: the third and fourth wait in a queue.
        threads = [threading.Thread(target=sleeper, args=(n,)) for n in "abcd"]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        health, elapsed = timed(server.port, "GET", "/healthz")
        assert health.status == 200 and elapsed < PROMPT
        assert json.loads(health.body) == {"status": "ok"}
        for thread in threads:
            thread.join(15)
        for answer, elapsed in results.values():
            assert answer.status == 503
            assert answer.error_code() == "service_unavailable"
            assert answer.headers["Retry-After"] == "1"
            assert IMPATIENT_TIMEOUT <= elapsed < IMPATIENT_TIMEOUT + 2
        # Each with its request id, and its request line.
        assert {answer.headers["X-Request-ID"] for answer, _ in results.values()} == {
            f"late-{name}" for name in "abcd"
        }
        for name in "abcd":
            log = wait_for(server, f"late-{name}")
        lines = request_lines(log, "json")
        late = {line["request_id"]: line for line in lines if line["request_id"][:5] == "late-"}
        assert sorted(late) == [f"late-{name}" for name in "abcd"]
        assert {(line["status"], line["path"]) for line in late.values()} == {(503, "/sleep")}


def test_a_request_whose_commit_has_begun_is_answered_by_the_app_past_the_deadline(tmp_path):
    """A 503 by the deadline says the write did not happen (apikeys.deadline): once a
    COMMIT has begun, that is no longer known, so the app's own answer is awaited."""
    with production(tmp_path, {}, workers=1, target="tests.wsgi_apps:impatient") as server:
        # Its COMMIT ends between the deadline (1 s) and the patience after it (2 s more).
        committed, elapsed = timed(server.port, "GET", "/commit?seconds=1.5")
        assert committed.status == 200 and elapsed >= 1.5
        assert json.loads(committed.body)["PATH_INFO"] == "/commit"
        assert timed(server.port, "GET", "/sleep?seconds=2")[0].status == 503
        assert "a commit has begun: waiting for it" in server.log()
        time.sleep(1.5)  # the one thread is free again: the next request starts at once
        # A COMMIT that hangs (the database stopped in it) is waited for the patience more:
        # then 503, saying that the change may have been made.
        hung, elapsed = timed(server.port, "GET", "/commit?seconds=8")
        waited = IMPATIENT_TIMEOUT + IMPATIENT_COMMIT_PATIENCE
        assert hung.status == 503 and waited <= elapsed < waited + 2, elapsed
        assert "may or may not have been made" in hung.json()["error"]["message"]


@pytest.mark.parametrize("seconds", [0.5, 30], ids=["answered-in-time", "stuck-past-deadline"])
def test_a_stopping_worker_answers_what_it_holds_and_never_waits_for_a_stuck_thread(
    tmp_path, seconds
):
    """SIGTERM while a request runs: one that ends in time is answered as usual; one whose
    thread hangs (a database paused, here a sleep) gets the deadline's 503, and the worker
    then exits SHUTDOWN_GRACE later, not when granian kills it 30 s later."""
    with production(tmp_path, {}, workers=1, target="tests.wsgi_apps:impatient") as server:
        answers: list[Answer] = []
        client = threading.Thread(
            target=lambda: answers.append(send(server.port, "GET", f"/sleep?seconds={seconds}"))
        )
        client.start()
        time.sleep(0.2)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        took = time.monotonic() - began
        client.join(10)
        log = server.log()
    stuck = seconds > IMPATIENT_TIMEOUT
    assert [answer.status for answer in answers] == [503 if stuck else 200]
    assert took < IMPATIENT_TIMEOUT + SHUTDOWN_GRACE + 3, took
    assert ("exiting with 1 request threads still running" in log) == stuck
    assert "Killing" not in log and "Traceback" not in log


def test_a_body_past_its_timeout_gets_408_with_its_request_id_and_line(tmp_path):
    head = (
        b"POST /x HTTP/1.1\r\nHost: x\r\nX-Request-ID: slow-body\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n{}"
    )
    with production(tmp_path, {}, target="tests.wsgi_apps:impatient") as server:
        answer = raw_exchange(server.port, head)  # 2 bytes of 10, then nothing
        (line,) = [
            line
            for line in request_lines(wait_for(server, "slow-body"), "json")
            if line["request_id"] == "slow-body"
        ]
    assert (answer.status, answer.error_code()) == (408, "request_timeout")
    assert answer.headers["X-Request-ID"] == "slow-body"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/x", 408)


# What the app sees: the environ built by the server


def test_the_environ_carries_path_query_and_addresses(echo):
    answer = send(echo, "GET", "/caf%C3%A9/a%20b?x=1&y=%20z", [("Host", "example.test")])
    environ = json.loads(answer.body)
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == ""
    # WSGI: the decoded path's bytes, as latin-1.
    assert environ["PATH_INFO"] == "/café/a b".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "x=1&y=%20z"
    assert environ["HTTP_HOST"] == "example.test"
    assert environ["SERVER_NAME"] == "127.0.0.1"
    assert environ["SERVER_PORT"] == str(echo)
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["wsgi.url_scheme"] == "http"


def test_a_raw_query_string_reaches_the_app_as_its_bytes(echo):
    answer = raw_exchange(echo, "GET /?y=café HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # WSGI: the query's bytes as latin-1, as for the path.
    assert json.loads(answer.body)["QUERY_STRING"] == "y=café".encode().decode("latin-1")


def test_the_environ_carries_the_body_and_its_type(echo):
    answer = send(echo, "POST", "/", [("Content-Type", "text/plain")], b"hello")
    environ = json.loads(answer.body)
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert environ["body"] == "hello"


def test_an_ipv6_client_address_reaches_the_app(tmp_path):
    with production(tmp_path, {"HOST": "::"}, target="tests.wsgi_apps:echo") as server:
        environ = json.loads(send(server.port, "GET", "/", host="::1").body)
    assert environ["REMOTE_ADDR"] == "::1"
    assert environ["SERVER_NAME"] == "::"  # the listening address, as granian's WSGI says


def test_head_answers_headers_without_a_body(service, admin_secret):
    get = send(service, "GET", KEYS, bearer(admin_secret).items())
    head = send(service, "HEAD", KEYS, bearer(admin_secret).items())
    assert (get.status, head.status) == (200, 200)
    assert head.body == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    health = send(service, "HEAD", "/healthz")
    assert (health.status, health.body) == (200, b"")


def test_query_strings_and_encoded_paths_reach_the_routes(service, admin_secret):
    listed = send(service, "GET", KEYS + "?limit=1", bearer(admin_secret).items())
    assert listed.status == 200, listed.body
    encoded = send(service, "GET", "/api/v1/org/api%2Dkeys", bearer(admin_secret).items())
    assert encoded.status == 200, encoded.body
    missing = send(service, "GET", KEYS + "/key_%E2%82%AC", bearer(admin_secret).items())
    assert missing.status == 404
    assert missing.error_code() == "not_found"


@pytest.mark.parametrize("query", ["x=\u0665", "y=caf\u00e9", "\U0001f600"])
def test_a_raw_utf8_query_string_is_read_like_an_encoded_one(service, admin_secret, query):
    """Raw non-ASCII bytes in a query, as a client may send them: the app reads them as
    it reads their percent-encoded form, on every route; never a 500."""
    authorization = f"Authorization: Bearer {admin_secret}\r\n".encode()
    for path, status in ((KEYS, 200), (CHECK, 400), ("/metrics", 200), ("/nope", 404)):
        head = f"GET {path}?{query} HTTP/1.1\r\nHost: x\r\n".encode() + authorization + b"\r\n"
        answer = raw_exchange(service, head)
        assert answer.status == status, (path, answer.body)


def test_a_body_cut_short_is_never_acted_on(service, admin_secret):
    body = json.dumps({"name": "cut-short", "scopes": ["read:billing"]}).encode()
    head = (
        f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin_secret}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 10}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert not answer or answer.startswith(b"HTTP/1.1 400"), answer
    listed = send(service, "GET", KEYS, bearer(admin_secret).items())
    assert b"cut-short" not in listed.body


@pytest.mark.parametrize(
    "body",
    [b"5\r\nhello\r\nZZ\r\n", b"5\r\nhello\r\n"],
    ids=["bad-chunk", "cut-short"],
)
def test_a_broken_chunked_body_is_never_acted_on(echo, body):
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", echo), timeout=10) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"REQUEST_METHOD" not in answer  # the app was never called


@pytest.mark.parametrize(
    "coding",
    [
        "gzip, chunked",
        "x-custom, chunked",
        "chunked, chunked",
        "chunked\r\nTransfer-Encoding: chunked",
    ],
    ids=["gzip", "unknown", "chunked-twice", "header-twice"],
)
def test_a_transfer_coding_other_than_chunked_alone_is_501_and_never_acted_on(echo, coding):
    """granian decodes chunked and would pass any other coding's bytes on as the body."""
    head = f"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n".encode()
    answer = raw_exchange(echo, head, [b"5\r\nhello\r\n0\r\n\r\n"])
    assert (answer.status, answer.error_code()) == (501, "not_implemented")
    assert answer.headers["Connection"] == "close"
    assert b"REQUEST_METHOD" not in answer.body  # the app was never called


def test_chunked_is_read_whatever_its_case(echo):
    head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
    answer = raw_exchange(echo, head, [b"5\r\nhello\r\n0\r\n\r\n"])
    assert answer.status == 200 and json.loads(answer.body)["body"] == "hello"


def test_a_flood_of_idle_connections_does_not_stop_the_server(service, billing_reader):
    """1,200 connections that send nothing: more than granian holds by default with two
    workers (512 each); /healthz and the check still answer."""
    check = [("X-API-Key", billing_reader), ("X-Required-Scope", "read:billing")]
    sockets = []
    try:
        for _ in range(1200):
            sockets.append(socket.create_connection(("127.0.0.1", service), timeout=5))
        for path, headers in (("/healthz", []), (CHECK, check)):
            started = time.monotonic()
            assert send(service, "GET", path, headers).status == 200
            assert time.monotonic() - started < 2
    finally:
        for connection in sockets:
            connection.close()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "\u3164\u200d\u2800", "scopes": ["read:billing"]}, "name"),
        ({"name": "two\u2028lines", "scopes": ["read:billing"]}, "name"),
        ({"name": "nulls", "scopes": [None] * 10_000}, "scopes"),
        ({"name": "a", "name ": "b", "scopes": ["read:billing"], "extra": 1}, "extra"),
    ],
)
def test_hostile_bodies_through_the_server_are_short_clear_400s(service, admin_secret, body, field):
    """Through the production server as through the app: a clear, short 400, nothing made."""
    headers = [*bearer(admin_secret).items(), ("Content-Type", "application/json")]
    before = json.loads(send(service, "GET", KEYS, bearer(admin_secret).items()).body)["total"]
    answer = send(service, "POST", KEYS, headers, json.dumps(body).encode())
    assert answer.status == 400, answer.body
    assert answer.error_code() == "invalid_request"
    assert field in json.loads(answer.body)["error"]["details"]
    assert len(answer.body) < 1024
    after = json.loads(send(service, "GET", KEYS, bearer(admin_secret).items()).body)["total"]
    assert after == before


def test_a_key_given_twice_in_one_json_object_is_refused_through_the_server(service, admin_secret):
    headers = [*bearer(admin_secret).items(), ("Content-Type", "application/json")]
    body = b'{"name": "first", "name": "second", "scopes": ["read:billing"]}'
    answer = send(service, "POST", KEYS, headers, body)
    assert (answer.status, answer.error_code()) == (400, "invalid_request")
