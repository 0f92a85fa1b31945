"""The WSGI app behind granian's RSGI interface, safe against slow and hostile clients.

granian's own WSGI interface reads a request body from the thread that runs the app, with
no time limit, so a few clients sending a body one byte at a time hold every thread. This
adapter stands between granian and the WSGI app and guarantees:

- **A slow client costs a coroutine, never a thread.** The request is read whole on the
  event loop first: at most ``MAX_HEADER_BYTES`` of headers (else 431
  ``headers_too_large``), at most the app's ``MAX_CONTENT_LENGTH`` of body (a larger
  Content-Length is refused before reading, a chunked body as soon as it passes it: 413
  ``payload_too_large``), within ``BODY_TIMEOUT`` seconds (else 408 ``request_timeout``).
  A transfer coding other than chunked alone is 501 ``not_implemented``.
  Only then does a thread run the app.
- **Every request is answered within** ``REQUEST_TIMEOUT`` seconds of its body's end,
  time waiting for a thread included: past it the answer is 503 ``service_unavailable``
  with Retry-After. The thread finishes on its own and its answer is dropped, and so is
  its write: a transaction that had not begun to commit is rolled back. Only a request
  whose commit had begun is waited for, ``COMMIT_PATIENCE`` seconds more, and answered
  as the app answers it; past that, its 503 says that the change may or may not have been made
  (apikeys/deadline.py).
  The app's own bounds sit inside it: database statements and connections about 5 s,
  Redis 0.5 s.
- **Liveness never waits**: ``GET``/``HEAD /healthz`` is answered here, on the event loop.
- Every answer of its own (those above, ``/healthz``'s, and a 500 when the app fails
  outside its own error handling) carries ``X-Request-ID`` and writes the request line
  as the app's answers do (apikeys/logs.py: the same id rule, fields and format), and is
  counted in the request metrics under the route ``unrouted`` (``/healthz`` under its
  own; apikeys/metrics.py). An answer past the deadline is counted once, as the 503.
- **Headers cannot alias one another**: a header whose name contains ``_`` is dropped
  (nginx and gunicorn do the same), so ``X_Original_URI`` can never stand in for
  ``X-Original-URI``. Repeated headers are joined with ``,`` (Cookie with ``; ``) as WSGI
  servers do, and their lower-case names are listed in ``environ[REPEATED_HEADERS]``
  so that the check can refuse them.
- Every answer of its own is in the service's error shape.

What it cannot answer: a request granian cannot parse as HTTP gets granian's bare 400,
and headers beyond granian's buffer (``MAX_BUFFER_BYTES``) or over 100 header lines get
its bare 431. granian hides header values that are not ASCII, showing only their names:
those are listed in ``environ[HIDDEN_HEADERS]``, for the check to fail closed on them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from werkzeug.middleware.proxy_fix import ProxyFix

from apikeys import logs, metrics
from apikeys.deadline import Deadline, bound
from apikeys.errors import OutcomeUnknown
from apikeys.http_errors import error_body

log = logging.getLogger(__name__)

#: Seconds a client may take to send its whole request body.
BODY_TIMEOUT = 10.0
#: Seconds from a request's body to its answer, waiting for a thread included. Above the
#: app's own bounds (database about 5 s, Redis 0.5 s), so it fires only when those fail.
REQUEST_TIMEOUT = 15.0
#: Bytes of request headers (names and values) answered with a JSON 431 above. Above
#: what nginx forwards to the check at most (its default takes four lines of 8 KB): a
#: proxy never has a client's legal request refused here, which it would take for the
#: service failing (nginx's auth_request answers any other status with a 500).
MAX_HEADER_BYTES = 64 * 1024
#: granian's read buffer: headers above it get granian's own empty 431 (its default).
MAX_BUFFER_BYTES = 8192 + 4096 * 100
#: Seconds more for a request whose COMMIT had begun at its deadline (a COMMIT takes
#: milliseconds), then 503 saying that the change may have been made. Deadline and this
#: stay under serve.py's 30 s for a stopping worker to finish its requests.
COMMIT_PATIENCE = 5.0
#: Seconds a worker that has answered every request waits, on exit, for threads that
#: still run past their deadline; then it exits without them.
SHUTDOWN_GRACE = 2.0
#: Request body bytes, when the app does not say (its MAX_CONTENT_LENGTH).
DEFAULT_MAX_BODY = 64 * 1024
#: The environ key listing the request's repeated headers (a frozenset of lower-case names).
REPEATED_HEADERS = "apikeys.repeated_headers"
#: The environ key listing the headers whose values granian hid (a frozenset of lower-case
#: names): it shows a header's name but not a value that is not ASCII.
HIDDEN_HEADERS = "apikeys.hidden_headers"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]
#: An answer: status, headers, body.
Answer = tuple[int, Headers, bytes]


class RequestHeaders(NamedTuple):
    """A request's headers as read from granian."""

    values: dict[str, str]  # by lower-case name, repeats joined
    repeated: frozenset[str]
    hidden: frozenset[str]  # present, but with no value granian would show
    size: int  # bytes, as on the wire (hidden values not counted)


class OwnAnswer(NamedTuple):
    """An answer of the adapter's own, not the app's: it is given a request id and a
    request line here."""

    status: int
    headers: Headers
    body: bytes


_JSON = ("content-type", "application/json")
_LATE = "The service cannot answer in time; retry shortly"
_HEALTHY = b'{"status":"ok"}\n'
_HEALTH = OwnAnswer(200, [_JSON, ("content-length", str(len(_HEALTHY)))], _HEALTHY)


class Adapter:
    """An RSGI application running the WSGI ``app`` in ``threads`` threads of its own, and
    requests to each of the ``own_threads`` paths in ``threads`` more of their own."""

    def __init__(
        self,
        app: WSGIApp,
        threads: int,
        *,
        own_threads: Iterable[str] = (),
        body_timeout: float = BODY_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        commit_patience: float = COMMIT_PATIENCE,
    ) -> None:
        self.app = app
        config = getattr(app, "config", {})
        self.max_body = config.get("MAX_CONTENT_LENGTH") or DEFAULT_MAX_BODY
        # The client as the app sees it, for the request line: past the trusted proxies'
        # X-Forwarded-For by the app's own rule, werkzeug's ProxyFix.
        trusted = config.get("APIKEYS_TRUSTED_PROXIES") or 0
        self.forwarded: Callable[..., Any] | None = (
            ProxyFix(lambda environ, _: environ["REMOTE_ADDR"], x_for=trusted) if trusted else None
        )
        self.body_timeout = body_timeout
        self.request_timeout, self.commit_patience = request_timeout, commit_patience
        # Threads live as long as the process: no idle exit, no thread-local state lost.
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="wsgi")
        #: The app's calls under way (or queued), for the exit to know what still runs.
        self.running: set[concurrent.futures.Future] = set()
        # A bulkhead: requests to these paths (the hot path) never queue behind the others,
        # which may all be waiting on the database's write lock.
        self.executors = {
            path: ThreadPoolExecutor(threads, thread_name_prefix="wsgi" + path.replace("/", "-"))
            for path in own_threads
        }

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """granian calls this once the worker has answered every request. A thread still
        running then works for a request its deadline answered, whose writes will not
        commit (apikeys/deadline.py); waiting for it, on a database that hangs rather
        than fails, would hold the worker's exit until granian kills it (30 s)."""
        for executor in (self.executor, *self.executors.values()):
            executor.shutdown(wait=False, cancel_futures=True)
        _, stuck = concurrent.futures.wait(list(self.running), timeout=SHUTDOWN_GRACE)
        if stuck:
            log.warning(
                "exiting with %d request threads still running past their deadline", len(stuck)
            )
            logging.shutdown()  # flush every handler: os._exit skips it
            os._exit(0)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        started = time.perf_counter()
        read = read_headers(scope.headers)
        headers = read.values
        # One id whoever answers, the app or this adapter (both, past the deadline).
        request_id = logs.request_id_from(headers.get("x-request-id"))
        answer: Answer
        if scope.path == "/healthz" and scope.method in ("GET", "HEAD"):
            answer = _HEALTH
        else:
            answer = await self._answer(scope, proto, read, request_id)
        status, response_headers, body = answer
        if isinstance(answer, OwnAnswer):
            response_headers = [*response_headers, ("x-request-id", request_id)]
            # Counted before it is sent, as the app's are: a scrape that follows an answer
            # (on any worker) always counts it.
            route = "/healthz" if answer is _HEALTH else metrics.UNROUTED
            metrics.count_own_answer(scope.method, route, status, started)
        proto.response_bytes(status, response_headers, b"" if scope.method == "HEAD" else body)
        if isinstance(answer, OwnAnswer):
            client = self._client_address(scope, headers)
            logs.log_request(request_id, scope.method, scope.path, status, started, client)

    async def _answer(
        self, scope: Any, proto: Any, read: RequestHeaders, request_id: str
    ) -> Answer:
        if read.size > MAX_HEADER_BYTES:
            return _error(
                431, "headers_too_large", f"Request headers exceed {MAX_HEADER_BYTES} bytes"
            )
        body = await self._read_body(read.values, proto)
        if isinstance(body, tuple):
            return body
        environ = build_environ(scope, read, body)
        environ[logs.REQUEST_ID] = request_id
        deadline = Deadline()
        executor = self.executors.get(scope.path, self.executor)
        running = executor.submit(run_wsgi, self.app, environ, deadline)
        self.running.add(running)
        running.add_done_callback(self.running.discard)
        answer = asyncio.wrap_future(running)
        committing = False
        try:
            done = await _within(answer, self.request_timeout)
            if done is None and not deadline.give_up():
                # Its change is being committed: only its own answer can say whether it was
                # made. That too has a bound: a database that hangs in a COMMIT.
                committing = True
                log.warning(
                    "%s %s: no answer within %g s, but a commit has begun: waiting for it",
                    *(scope.method, scope.path, self.request_timeout),
                )
                done = await _within(answer, self.commit_patience)
        except Exception:
            log.exception("the app failed outside its own error handling")
            return _error(500, "internal_error", "Internal error")
        if done is not None:
            return done
        answer.cancel()  # one still waiting for a thread never runs
        environ[metrics.ABANDONED] = True  # the app's answer, if it comes, is not counted
        waited = self.request_timeout + (self.commit_patience if committing else 0)
        log.warning("%s %s: no answer within %g s", scope.method, scope.path, waited)
        message = OutcomeUnknown.message if committing else _LATE
        return _error(503, "service_unavailable", message, extra=[("retry-after", "1")])

    def _client_address(self, scope: Any, headers: dict[str, str]) -> str:
        address, _ = _host_port(scope.client)
        if self.forwarded is None:
            return address
        forwarded_for = headers.get("x-forwarded-for")
        return self.forwarded({"REMOTE_ADDR": address, "HTTP_X_FORWARDED_FOR": forwarded_for}, None)

    async def _read_body(self, headers: dict[str, str], proto: Any) -> bytes | Answer:
        """The whole request body, or the error to answer instead."""
        declared = _content_length(headers)
        coding = headers.get("transfer-encoding")
        if coding is None and declared is None:
            return b""  # HTTP/1.1: no body (and no read to wait for)
        if coding is not None and coding.strip().lower() != "chunked":
            # granian decodes chunked and passes any other coding on undecoded (gzip's
            # bytes read as the body), and a chunked sent twice is not one body's framing.
            return _error(
                501,
                "not_implemented",
                "Transfer-Encoding other than chunked alone is not supported",
                close=True,
            )
        if declared is not None and declared > self.max_body:
            return _too_large(self.max_body)
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await read_body(proto, self.max_body)
        except TimeoutError:
            return _error(
                408,
                "request_timeout",
                f"The request body took over {self.body_timeout:g} s",
                close=True,
            )
        except BodyTooLarge:
            return _too_large(self.max_body)
        except BodyIncomplete:
            body = None
        if body is None or (declared is not None and len(body) != declared):
            return _error(400, "invalid_request", "The request body ended early", close=True)
        return body


async def _within(answer: asyncio.Future[Answer], seconds: float) -> Answer | None:
    """``answer``, or None if it takes over ``seconds`` (it goes on meanwhile)."""
    try:
        async with asyncio.timeout(seconds):
            return await asyncio.shield(answer)
    except TimeoutError:
        return None


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    pass


async def read_body(proto: Any, limit: int) -> bytes:
    """The whole request body; BodyTooLarge as soon as it passes ``limit`` bytes.

    granian ends a body with one empty chunk, and turns a broken one (cut short, bad
    chunked encoding) into an empty chunk before that: BodyIncomplete, rather than act on
    half a body. (Request trailers, which no client of this service sends, read the same.)
    """
    chunks, size, ended = [], 0, False
    async for chunk in proto:
        if ended:
            raise BodyIncomplete()
        ended = not chunk
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def read_headers(scope_headers: Any) -> RequestHeaders:
    """The request's headers. Names with ``_`` are dropped (they would alias ``-``)."""
    headers: dict[str, str] = {}
    repeated = set()
    size = 0
    for name, value in scope_headers.items():
        size += len(name) + len(value) + 4  # ": " and CRLF, as on the wire
        if "_" in name:
            continue
        if name in headers:
            repeated.add(name)
            value = f"{headers[name]}{'; ' if name == 'cookie' else ','}{value}"
        headers[name] = value
    # granian lists the name of a header whose value is not ASCII, and hides the value.
    names, hidden = scope_headers.keys(), frozenset[str]()
    if len(names) != len(headers):  # a name beyond those read: dropped (``_``) or hidden
        hidden = frozenset(name for name in names if name not in headers and "_" not in name)
    return RequestHeaders(headers, frozenset(repeated), hidden, size)


def build_environ(scope: Any, read: RequestHeaders, body: bytes) -> dict[str, Any]:
    """The WSGI environ granian's WSGI interface would build, with the body read already."""
    server_host, server_port = _host_port(scope.server)
    client_host, client_port = _host_port(scope.client)
    environ = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        # WSGI carries the decoded path's bytes, and the query's, as latin-1; granian
        # decoded them as UTF-8 (refusing what is not).
        "PATH_INFO": scope.path.encode().decode("latin-1"),
        "QUERY_STRING": scope.query_string.encode().decode("latin-1"),
        "SERVER_NAME": server_host,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": "HTTP/1.0"
        if scope.http_version == "1"
        else f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": client_host,
        "REMOTE_PORT": client_port,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "granian",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": io.BytesIO(body),
        # The body is whole: werkzeug may read to its end without a Content-Length.
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        REPEATED_HEADERS: read.repeated,
        HIDDEN_HEADERS: read.hidden,
    }
    headers = read.values
    for name, value in headers.items():
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
        elif name == "content-length":
            environ["CONTENT_LENGTH"] = value
        elif name != "transfer-encoding":
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    if body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(body))  # a chunked body, read whole
    environ.setdefault("HTTP_HOST", scope.authority or "")
    return environ


def run_wsgi(app: WSGIApp, environ: dict[str, Any], deadline: Deadline) -> Answer:
    """Call ``app`` and collect its whole answer (the service's answers are small); its
    commits are ``deadline``'s to allow."""
    started: list[Any] = []
    written: list[bytes] = []

    def start_response(status: str, headers: Headers, exc_info: Any = None) -> Callable:
        # Nothing is sent before the app returns, so a later call (with exc_info) may
        # replace an earlier one.
        started[:] = [status, headers]
        return written.append  # WSGI's legacy write()

    with bound(deadline):
        result = app(environ, start_response)
        try:
            written.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
    status, headers = started
    return int(status.split(" ", 1)[0]), headers, b"".join(written)


def _content_length(headers: dict[str, str]) -> int | None:
    """The declared body length. granian has refused any but one number (which it allows
    repeated, joined here as "5,5")."""
    value = headers.get("content-length")
    return None if value is None else int(value.partition(",")[0])


def _host_port(address: str) -> tuple[str, str]:
    """``"[::1]:8000"`` or ``"127.0.0.1:8000"`` as host and port, brackets dropped."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def _error(
    status: int, code: str, message: str, close: bool = False, extra: Iterable[tuple[str, str]] = ()
) -> OwnAnswer:
    headers = [_JSON, *extra]
    if close:
        # The rest of the request may still be on its way: do not read it as the next one.
        headers.append(("connection", "close"))
    return OwnAnswer(status, headers, error_body(code, message))


def _too_large(limit: int) -> OwnAnswer:
    return _error(413, "payload_too_large", f"The request body exceeds {limit} bytes", close=True)


def load(target: str, threads: int, own_threads: Iterable[str] = ()) -> Adapter:
    """The adapter around the WSGI app that the factory ``target`` ("module:function")
    builds, or the Adapter it builds itself; granian calls it in each worker."""
    module, _, name = target.partition(":")
    built = getattr(importlib.import_module(module), name or "create_app")()
    return built if isinstance(built, Adapter) else Adapter(built, threads, own_threads=own_threads)
