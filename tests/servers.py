"""Real servers for the tests that need processes of their own.

``production(tmp_path, env)`` starts the production server, ``serve.py``, on a free port
with ``env`` over the environment, and stops it on exit, whatever happens in between.
Its request lines name the worker (``pid``) that served each request, so a test can tell
that every worker has answered.

``redis_server(tmp_path)`` starts a Redis of the test's own, which the test may stop or
kill: never the shared one.

``postgres_server()`` starts a PostgreSQL cluster of the test's own, which the test may
stop, restart or pause: never the shared one.

``proxied_service(tmp_path, proxy)`` puts a real reverse proxy with a configuration of
``deploy/`` (``proxy`` starts it) in front of ``serve.py`` and of ``echo_backend()``, a
backend that answers with what it heard: tests/test_nginx.py and tests/test_caddy.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from apikeys import crypto
from bench.processes import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "serve.py"
START_TIMEOUT = 30.0
#: The service's settings from the environment: never the developer's in a test.
SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "RATE_LIMIT_PER_KEY",
    "RATE_LIMIT_FAILED_AUTH",
    "LAST_USED_INTERVAL_SECONDS",
    "APIKEYS_BOOTSTRAP_KEY",
    "APIKEYS_BOOTSTRAP_ORG",
    "APIKEYS_POLICY_FILE",
    "DATABASE_POOL_SIZE",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_TIMEOUT",
    "APIKEYS_TRUSTED_PROXIES",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "AUDIT_RETENTION_DAYS",
    "RATELIMIT_KEY_PREFIX",
)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    request_id: str


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    def error_code(self) -> str:
        return self.json()["error"]["code"]


def send(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes | None = None,
    host: str = "127.0.0.1",
) -> Answer:
    """One request over a fresh connection, headers sent exactly as given: a mapping, or
    pairs to repeat a name or set Host."""
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        own_host = any(name.lower() == "host" for name, _ in pairs)
        connection.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in pairs:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def send_raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """``data`` as it is, for requests http.client refuses to write; the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, dict(response.headers), response.read()


#: Rate limits no test of a server reaches: the server's counters have no per-test prefix,
#: so a test keeps clear of other users' budgets on the shared Redis.
ROOMY_LIMITS = {"RATE_LIMIT_PER_KEY": "100000/minute", "RATE_LIMIT_FAILED_AUTH": "100000/minute"}


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    error_log: Path

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Reply:
        """One request over a fresh connection, so that any worker may take it; it carries
        a request id of its own unless ``headers`` give one."""
        headers = {"X-Request-ID": uuid.uuid4().hex, **(headers or {})}
        request_id = headers["X-Request-ID"]
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read(), request_id)
        finally:
            connection.close()

    def workers_of(self, replies: list[Reply], timeout: float = 5.0) -> dict[str, int]:
        """The pid of the worker that served each reply, by request id."""
        wanted = {reply.request_id for reply in replies}
        deadline = time.monotonic() + timeout
        while True:
            # A worker logs a request just after answering it: wait for the lines, bounded.
            served = {}
            for line in self.log().splitlines():
                try:
                    logged = json.loads(line)
                except ValueError:
                    continue  # granian's own lines
                if (
                    isinstance(logged, dict)
                    and logged.get("logger") == "apikeys.request"
                    and logged["request_id"] in wanted
                ):
                    served[logged["request_id"]] = logged["pid"]
            if len(served) == len(wanted) or time.monotonic() > deadline:
                return served
            time.sleep(0.05)

    def until_every_worker(
        self, send_one: Callable[[], Reply], workers: int = 2, batch: int = 8, most: int = 400
    ) -> tuple[list[Reply], set[int]]:
        """Requests (``send_one()``, each on a fresh connection) in concurrent batches until
        ``workers`` workers have answered, or ``most`` requests; the replies and the pids
        of the workers that served them."""
        replies: list[Reply] = []
        served: set[int] = set()
        with ThreadPoolExecutor(max_workers=4) as pool:
            while len(served) < workers and len(replies) < most:
                sent = list(pool.map(lambda _: send_one(), range(batch)))
                replies += sent
                served |= set(self.workers_of(sent).values())
        return replies, served

    def log(self) -> str:
        return self.error_log.read_text()

    def worker_pids(self) -> set[int]:
        """The pids of the server's worker processes (its main process's children)."""
        listed = subprocess.run(
            ["ps", "--ppid", str(self.process.pid), "-o", "pid="],
            capture_output=True,
            text=True,
            check=False,
        )
        return {int(pid) for pid in listed.stdout.split()}


@contextmanager
def production(
    tmp_path: Path, env: Mapping[str, str], workers: int = 2, target: str | None = None
) -> Iterator[Server]:
    """``serve.py`` (the Docker image's command) with ``workers`` worker processes on a
    free port of 127.0.0.1, ``env`` over the environment; its output goes to ``error_log``.
    ``target`` is another app factory for serve.py to serve (``tests.wsgi_apps:echo``)."""
    port = free_port()
    error_log = tmp_path / f"serve-{port}.log"
    with error_log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(SERVE), *([target] if target else [])],
            cwd=tmp_path,
            env={
                **os.environ,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "WEB_CONCURRENCY": str(workers),
                # What the server makes for itself (its metrics directory) goes with the
                # test's files, even when a server slow to stop is killed before it cleans up.
                "TMPDIR": str(tmp_path),
                **env,
            },
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = Server(port, process, error_log)
        _wait_until_healthy(server)
        yield server
    finally:
        stop_process_group(process)


_STARTED_WORKER = re.compile(r"^\[INFO\] Started worker-\d+$", re.MULTILINE)


def wait_for_workers(server: Server, count: int) -> None:
    """Until ``count`` workers of the production server have started: it answers as soon as
    one has, and a test may want every worker to meet the fault it makes."""
    deadline = time.monotonic() + START_TIMEOUT
    # granian logs "Started worker-1" and then "Started worker-1 runtime-1": count the first.
    while len(_STARTED_WORKER.findall(server.log())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not start:\n{server.log()}")
        time.sleep(0.05)


class StartFailed(AssertionError):
    """The server exited during start-up; the message carries its log."""

    def __init__(self, returncode: int, log: str) -> None:
        super().__init__(f"the server exited with status {returncode}:\n{log}")
        self.returncode = returncode
        self.log = log


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        _fail_if_exited(server.process, server.error_log)
        try:
            if server.request("GET", "/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the server did not answer /healthz within {START_TIMEOUT} s")


def _fail_if_exited(process: subprocess.Popen, error_log: Path) -> None:
    if process.poll() is not None:
        log = error_log.read_text() if error_log.exists() else ""
        raise StartFailed(process.returncode, log)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server(
    directory: Path, port: int | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """A Redis server of the caller's own, and its URL; killed on exit if still running."""
    port = port or free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--daemonize", "no", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Its log says when it listens; it exits (ending the log) if it cannot.
        for line in server.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server exited before it was ready")
        yield server, f"redis://127.0.0.1:{port}/0"
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        server.stdout.close()


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
#: PostgreSQL refuses to run as root. Started straight as its user, with no ``runuser`` in
#: between (which stops itself when its child is stopped, and then never reaps it).
_AS_POSTGRES = {"user": "postgres", "group": "postgres", "extra_groups": [], "cwd": "/"}


@dataclass
class Postgres:
    """A PostgreSQL cluster of the test's own, run as the ``postgres`` user."""

    data: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(POSTGRES_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port)]
            + ["-k", str(self.data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_AS_POSTGRES,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.1)

    def answers(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """An immediate shutdown, as in a crash: clients are cut off, new ones refused.

        (A fast shutdown waits for a backend still in its start-up, such as one whose
        client gave up while the server was paused.)"""
        if self.process and self.process.poll() is None:
            self.resume()
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def pause(self) -> None:
        """Every process of the cluster stopped (SIGSTOP): its host still answers TCP."""
        for pid in self._processes():  # the postmaster first: it forks no more backends
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in reversed(self._processes()):
            os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        """The postmaster and its children (each of which leads a process group of its own)."""
        postmaster = self.process.pid
        listed = subprocess.run(
            ["ps", "--ppid", str(postmaster), "-o", "pid="], capture_output=True, text=True
        )
        return [postmaster, *(int(pid) for pid in listed.stdout.split())]


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A fresh cluster on a free port, stopped and removed on exit."""
    # Not under pytest's tmp_path: its parents are closed to the postgres user.
    data = Path(tempfile.mkdtemp(prefix="apikeys-pg-"))
    try:
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(
            [str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres"]
            + ["--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            **_AS_POSTGRES,
        )
        cluster = Postgres(data, free_port())
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


# A reverse proxy of deploy/ in front of serve.py and a backend that echoes.

#: The per-key limit of the service behind a proxy: high enough for every test's own key.
PROXIED_PER_KEY = 50
#: What the check reads to know the target, and its error header: never from a client
#: (every proxy configuration in deploy/ keeps them out; test_deploy_configs reads these too).
CHECK_INPUTS = (
    "X-Required-Scope",
    "X-Original-Method",
    "X-Original-URI",
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
    "X-Auth-Error",
)
#: What the check tells the backend: only ever the check's own values.
IDENTITY = ("X-Auth-Org-Id", "X-Auth-Key-Id", "X-Auth-Scopes")
UNAUTHORIZED = {"error": {"code": "unauthorized", "message": "Missing or invalid API key"}}


class Echoed(Answer):
    def heard(self) -> list[tuple[str, str]]:
        """The headers the echo backend received, in order, repeats included."""
        return [tuple(pair) for pair in self.json()["headers"]]

    def heard_names(self) -> list[str]:
        return [name.lower() for name, _ in self.heard()]

    def heard_values(self, name: str) -> list[str]:
        """The values of header ``name`` the backend heard, whatever case a proxy wrote it in."""
        return [value for heard, value in self.heard() if heard.lower() == name.lower()]


@dataclass(frozen=True)
class Key:
    secret: str
    id: str
    org_id: str


@dataclass
class Stack:
    """A proxy on ``port`` (its output in ``log``), the service behind it on ``service``."""

    port: int
    service: Server
    admin: str
    log: Path

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> Echoed:
        """One request to the proxy; ``headers`` a mapping, or pairs to repeat a name."""
        return Echoed(**vars(send(self.port, method, path, headers, body)))

    def key(self, *scopes: str) -> Key:
        """A new key of the admin's organization, made through the service itself."""
        body = {"name": "k-" + crypto.generate_secret()[-10:], "scopes": list(scopes)}
        made = self.service.request(
            "POST",
            "/api/v1/org/api-keys",
            {"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
        assert made.status == 201, made.body
        created = json.loads(made.body)
        # The key object has no organization: the check says which it is.
        check = self.service.request(
            "GET",
            "/api/v1/auth/check",
            {"Authorization": f"Bearer {created['key']}", "X-Required-Scope": scopes[0]},
        )
        assert check.status == 200
        return Key(created["key"], created["id"], check.headers["X-Auth-Org-Id"])


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    status = 200


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with JSON of what it received: method, path, headers, body."""

    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length).decode()
        body = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": list(self.headers.items()),
                "body": received,
            }
        ).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # else the body is read as the next response
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _echo

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


@contextmanager
def echo_backend(status: int = 200) -> Iterator[int]:
    """A backend on a free port of 127.0.0.1 that echoes each request (``Echoed``) with
    ``status``."""
    httpd = _EchoServer(("127.0.0.1", 0), _Echo)
    httpd.status = status
    thread = threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def configured(source: Path, target: Path, replacements: Mapping[str, str]) -> Path:
    """``source`` written to ``target`` with each line an operator edits replaced; each
    must be in ``source`` once."""
    text = source.read_text()
    for line, replacement in replacements.items():
        assert text.count(line) == 1, f"{source.name} should have one {line!r}"
        text = text.replace(line, replacement)
    target.write_text(text)
    return target


@contextmanager
def foreground(
    command: list[str], log: Path, port: int, env: Mapping[str, str] | None = None
) -> Iterator[Path]:
    """``command`` (a proxy in the foreground), its output to ``log``, until it listens on
    ``port`` of 127.0.0.1; stopped on exit, whatever happens in between."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"{command[0]} exited with {process.returncode}:\n{log.read_text()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{command[0]} did not listen within 30 s") from None
                time.sleep(0.05)
        yield log
    finally:
        stop_process_group(process)


#: A proxy's start: (directory, its port, the service's port, the backend's port), as a
#: context manager that yields the proxy's log once it listens.
StartProxy = Callable[[Path, int, int, int], AbstractContextManager[Path]]


@contextmanager
def proxied_service(directory: Path, proxy: StartProxy) -> Iterator[Stack]:
    """serve.py (2 workers, SQLite), the echo backend, and ``proxy`` in front of both."""
    admin = crypto.generate_secret()
    env = {name: "" for name in SETTINGS} | {
        "DATABASE_URL": f"sqlite:///{directory / 'apikeys.db'}",
        "APIKEYS_BOOTSTRAP_KEY": admin,
        "RATE_LIMIT_PER_KEY": f"{PROXIED_PER_KEY}/minute",
        "RATE_LIMIT_FAILED_AUTH": "1000/minute",
        # The proxies set X-Forwarded-For to the client's address.
        "APIKEYS_TRUSTED_PROXIES": "1",
    }
    port = free_port()
    with (
        production(directory, env, workers=2) as service,
        echo_backend() as backend,
        proxy(directory, port, service.port, backend) as log,
    ):
        yield Stack(port, service, admin, log)


def assert_refused(reply: Answer, status: int, code: str) -> dict:
    """``reply`` is the service's own refusal: its status, JSON error object, no-store."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.error_code() == code
    assert reply.headers["Cache-Control"] == "no-store"
    return reply.json()


#: Headers a client adds to pass for the check or to speak for it: the proxy must keep
#: every one from the backend (``assert_heard_only_the_check``) and let the request pass.
SPOOFED = [
    [("X-Auth-Org-Id", "org-evil"), ("X-Auth-Key-Id", "key-evil")],
    [("X-Auth-Scopes", "write:billing write:api_keys")],
    [("x-auth-scopes", "write:billing"), ("X-AUTH-ORG-ID", "org-evil")],
    [("X-Auth-Scopes", "write:billing"), ("X-Auth-Scopes", "read:billing")],
    [("X_Auth_Scopes", "write:billing"), ("X_Auth_Org_Id", "org-evil")],
    [("X-Auth-Error", "{}")],
    [("X-Required-Scope", "bogus")],
    [("X-Required-Scope", "write:billing")],
    [("X-Forwarded-Method", "POST")],
    [("X-Forwarded-Uri", "/api/v1/billing/invoices")],
    [("X-Original-Method", "DELETE"), ("X-Original-URI", "/admin")],
]
#: (method, path, headers a client adds) that would widen what a key of
#: read:charge_points may do, were the proxy to let them reach the check: each a 403.
WIDENING = {
    "required-scope": (
        "GET",
        "/api/v1/billing/invoices",
        [("X-Required-Scope", "read:charge_points")],
    ),
    "original-uri": (
        "GET",
        "/api/v1/billing/invoices",
        [("X-Original-URI", "/api/v1/charge_points/1")],
    ),
    "original-method": ("POST", "/api/v1/charge_points", [("X-Original-Method", "GET")]),
    "forwarded-pair": (
        "GET",
        "/api/v1/billing/invoices",
        [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/api/v1/charge_points/1")],
    ),
    "auth-scopes": ("GET", "/api/v1/billing/invoices", [("X-Auth-Scopes", "read:billing")]),
}


def spoofed_id(pairs: list[tuple[str, str]]) -> str:
    return "+".join(name for name, _ in pairs)


def assert_heard_only_the_check(reply: Echoed, key: Key, scopes: str) -> None:
    """The backend heard the check's identity for ``key`` once each, whatever the client
    added, and none of the check's input headers."""
    identity = {name.lower() for name in IDENTITY}
    heard = sorted(
        (name.lower(), value) for name, value in reply.heard() if name.lower() in identity
    )
    assert heard == [
        ("x-auth-key-id", key.id),
        ("x-auth-org-id", key.org_id),
        ("x-auth-scopes", scopes),
    ]
    names = reply.heard_names()
    assert not {name.lower() for name in CHECK_INPUTS} & set(names)
    assert not [
        name for name in names if name.replace("_", "-").startswith("x-auth") and "_" in name
    ]
