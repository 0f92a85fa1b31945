"""The service's logs: one line per request, and every line of the process in one format.

``LOG_FORMAT=json`` (the default) writes one JSON object per line, ``text`` a line for
people; ``LOG_LEVEL`` (INFO) is the least severe level written. Each request is given an
id, its ``X-Request-ID`` when it carries a well-formed one, and the id is sent back on
every response.

No secret is ever written: the request line has no headers, body or query string, and
every line, whatever wrote it (a path, a method, peewee's queries at DEBUG, a traceback),
is written with anything that starts with the keys' prefix masked. Every key of the
service, whole, cut short or mistyped, starts with that prefix: it is what the prefix is
for. A key without it (its body and checksum) is masked in the request line's path, and
an ``X-Request-ID`` holding one is replaced.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import sys
import time
from typing import Any, cast

import orjson
from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.orjson import OrjsonFormatter

from apikeys.auth import header
from apikeys.crypto import BARE_LENGTH, contains_secret, masked, masked_bare
from apikeys.metrics import ABANDONED
from apikeys.process import process_id

REQUEST_ID_HEADER = "X-Request-ID"
#: The environ key of the id a server gave the request (apikeys.serving), which the app
#: takes rather than make one of its own.
REQUEST_ID = "apikeys.request_id"

log = logging.getLogger("apikeys.request")
_late = logging.getLogger(__name__)

_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: The request line's fields besides the method, path and status of its message.
_CONTEXT = ("request_id", "duration_ms", "remote_addr", "key_id", "org_id")
#: Every field a request line may carry besides logging's own, in the order written.
_REQUEST_FIELDS = (
    *("request_id", "method", "path", "status", "duration_ms", "remote_addr"),
    *("pid", "key_id", "org_id"),
)


class _UtcTime(logging.Formatter):
    """RFC 3339 times in UTC, to the millisecond, through logging's own hooks."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.default_msec_format % (_second(int(record.created)), record.msecs)


@functools.lru_cache(maxsize=2)
def _second(second: int) -> str:
    """A second's time, formatted once for all the lines written within it."""
    return time.strftime(_UtcTime.default_time_format, time.gmtime(second))


class _Json(_UtcTime, OrjsonFormatter):
    """python-json-logger's formatter on orjson: it takes half the time of the json module's."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def format(self, record: logging.LogRecord) -> str:
        plain = record.levelno == logging.INFO and not (record.exc_info or record.stack_info)
        if record.name != log.name or not plain:
            return super().format(record)
        # A request line carries no extras but its own: they are taken by name, where
        # python-json-logger would test every attribute of the record for one.
        context = record.__dict__
        fields = {field: context[field] for field in _REQUEST_FIELDS if field in context}
        return request_line_json(record.created, record.getMessage(), fields)


def request_line_json(created: float, message: str, fields: dict[str, Any]) -> str:
    """A request line in JSON, written at ``created`` (``time.time()``): logging's fields
    (as ``_Json`` names them), then the request's, in the order given."""
    msecs = int((created - int(created)) * 1000)
    line = {
        "time": _UtcTime.default_msec_format % (_second(int(created)), msecs),
        "level": "INFO",
        "logger": log.name,
        "message": message,
    }
    line.update(fields)
    return orjson.dumps(line).decode()


class _Text(_UtcTime, logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = record.__dict__
        fields = [f"{name}={context[name]}" for name in _CONTEXT if context.get(name) is not None]
        return " ".join([line, *fields]) if fields else line


_FORMATTERS = {"json": _Json, "text": _Text}


class StderrHandler(logging.StreamHandler):
    """The service's one handler (``configure``): writes to ``sys.stderr`` as it is when a
    line is written, not as it was when the handler was made: tests swap it, and so may a
    server."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    def format(self, record: logging.LogRecord) -> str:
        return masked(super().format(record))

    def writes_json_from(self, level: int) -> bool:
        """Whether a line of ``level`` would be written, in JSON, through no filter but the
        request id's (which a request line does not need)."""
        return (
            isinstance(self.formatter, _Json)
            and self.level <= level
            and self.filters == [_with_request_id]
        )

    def write_request_line(self, message: str, fields: dict[str, Any]) -> bool:
        """Write a request line as the JSON formatter would, without a record; False if it
        could not be written (the logging module then tries, and reports the failure)."""
        line = masked(request_line_json(time.time(), message, fields))
        try:
            with self.lock:  # type: ignore[union-attr]  # a Handler always has one
                stream = self.stream
                stream.write(line + self.terminator)
                stream.flush()
        except Exception:
            return False
        return True


def _with_request_id(record: logging.LogRecord) -> bool:
    """Give a line written during a request (a warning, an error) that request's id."""
    if "request_id" not in record.__dict__ and has_request_context():
        record.request_id = g.get("request_id")
    return True


def configure(log_format: str, level: str) -> None:
    """Write every log line of the process (the service's, peewee's, the libraries') to
    stderr in ``log_format``, from ``level`` up. Idempotent: one handler per process,
    whose format and level a later call replaces."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, StderrHandler)), None)
    if handler is None:
        handler = StderrHandler()
        handler.addFilter(_with_request_id)
        root.addHandler(handler)
    handler.setFormatter(_FORMATTERS[log_format.lower()]())
    handler.setLevel(level.upper())
    # Lowered to let the lines through, never raised: another handler (a test's capture)
    # may ask for more than this one writes.
    if root.getEffectiveLevel() > handler.level:
        root.setLevel(handler.level)
    # No format shows a record's thread or process (the request line has its own pid):
    # logging's documented switches spare every record looking them up.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def request_id() -> str:
    """The current request's id."""
    return g.request_id


def request_id_from(presented: str | None) -> str:
    """The id of a request whose ``X-Request-ID`` is ``presented``: that one when it is
    well formed, otherwise a new one."""
    # A key in X-Request-ID would reach the log; such an id is replaced, not masked.
    if presented and _WELL_FORMED_ID.fullmatch(presented) and not contains_secret(presented):
        return presented
    # Unique, not secret: Python's generator (reseeded in a forked child) rather than the
    # system's, whose read is a system call on every request.
    return f"{random.getrandbits(128):032x}"


def log_request(
    request_id: str,
    method: str,
    path: str,
    status: int,
    started: float,
    remote_addr: str | None,
    key_id: str | None = None,
    org_id: str | None = None,
) -> None:
    """Write the request line of a request that began at ``started`` (``perf_counter``)
    and was answered ``status``; ``path`` without its query string."""
    if not log.isEnabledFor(logging.INFO):
        return
    if len(path) >= BARE_LENGTH:
        # A key without its prefix (which every line is masked for) takes a search to find:
        # made only in a path long enough to hold one, the one place a client puts text.
        path = masked_bare(masked(path))
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "remote_addr": remote_addr,
        # Which worker answered: several serve one port.
        "pid": process_id(),
    }
    if key_id:
        fields["key_id"] = key_id
        fields["org_id"] = org_id
    handler = request_line_handler()
    if handler is not None and handler.write_request_line(f"{method} {path} {status}", fields):
        return
    # Made and handled directly: Logger.info would walk the stack for a source line
    # that the request line does not show, a sixth of the line's cost.
    record = log.makeRecord(
        log.name, logging.INFO, "", 0, "%s %s %s", (method, path, status), None, extra=fields
    )
    log.handle(record)


def request_line_handler() -> StderrHandler | None:
    """The service's handler, when a request line would reach it alone, unfiltered and in
    JSON, so that the line can be written to it straight (half the line's cost, without
    the logging module's dispatch and a record); None otherwise. With any other handler
    on the way (an operator's, a test's capture), every request line takes the logging
    module's usual path, and that handler sees it."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = log
    while logger is not None:
        found.extend(logger.handlers)
        logger = logger.parent if logger.propagate else None
    if len(found) != 1 or log.filters or log.disabled:
        return None
    handler = found[0]
    if not isinstance(handler, StderrHandler) or not handler.writes_json_from(logging.INFO):
        return None
    return handler


def _begin() -> None:
    # Each use of a proxy (g, request) looks its object up anew: once per hook suffices.
    context = g._get_current_object()
    context.request_started = time.perf_counter()
    environ = request.environ
    context.request_id = environ.get(REQUEST_ID) or request_id_from(
        header(environ, REQUEST_ID_HEADER)
    )


def _finish(response: Response) -> Response:
    """Send the request id back and write the request line, with the final status: this
    hook is the app's first, so it runs after every other after-request hook."""
    # The proxies' objects, looked up once (a proxy looks its object up on each use).
    context, current = g._get_current_object(), cast(Any, request)._get_current_object()
    response.headers[REQUEST_ID_HEADER] = context.request_id
    if ABANDONED in current.environ:
        # The client had the deadline's 503, with its request line: one line a request.
        _late.warning(
            "%s %s ended past its deadline: %d after %.0f ms, its client had a 503",
            *(current.method, current.path, response.status_code),
            (time.perf_counter() - context.request_started) * 1000,
        )
        return response
    principal = context.get("principal")
    log_request(
        context.request_id,
        current.method,
        current.path,
        response.status_code,
        context.request_started,
        current.remote_addr,
        principal.key_id if principal else None,
        principal.org_id if principal else None,
    )
    return response


def init_app(app: Flask) -> None:
    """Configure this process's logging from ``app``'s settings, and log its requests.

    Call it before any other extension registers request hooks: its ``after_request``
    must be the app's first to run last.
    """
    configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
    app.before_request(_begin)
    app.after_request(_finish)
