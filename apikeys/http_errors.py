"""The one path by which every error leaves as JSON.

Every response error is ``{"error": {"code": ..., "message": ...}}``, optionally with
``details``: domain errors (apikeys/errors.py), werkzeug's HTTP errors (404, 405, 413),
database failures and uncaught exceptions alike.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response
from peewee import DatabaseError, IntegrityError, InterfaceError, PeeweeException
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from apikeys import db, deadline
from apikeys.crypto import masked
from apikeys.errors import OutcomeUnknown, RateLimited, ServiceError, ServiceUnavailable
from apikeys.repeated_warnings import Throttled

# The name these lines had before the module was split: operators' log searches know it.
log = logging.getLogger("apikeys.errors")
#: During an outage every request fails alike: a line for it every 10 s, not thousands.
_unavailable = Throttled(log)

#: The error code for each HTTP status that werkzeug or a library may raise.
_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}
_MESSAGES = {
    400: "The request could not be read",
    404: "No such endpoint",
    405: "This endpoint does not accept that method",
    413: "The request body is too large",
    429: RateLimited.message,
    500: "Internal error",
}


def error_body(code: str, message: str, details: Any = None) -> bytes:
    """The one place an error body is written: for Flask's answers and the server's own."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return json.dumps({"error": error}, separators=(",", ":")).encode() + b"\n"


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: Any = None
) -> Response:
    """An error body as a Flask response."""
    response = Response(error_body(code, message, details), status, mimetype="application/json")
    response.headers.extend(headers or {})
    return response


#: Bounds on validation details, which a hostile body could make as large as itself.
MAX_DETAILS = 20
_MAX_NAME = 64


def _validation_details(data: dict[str, Any]) -> dict[str, Any]:
    """webargs reports ``{"json": {...}}`` (``"query"`` for a query string); callers only
    need the field errors."""
    messages = data.get("messages") or data.get("errors") or {}
    if isinstance(messages, dict):
        fields = messages.get("json", messages.get("query", messages))
    else:
        fields = messages
    return fields if isinstance(fields, dict) else {"body": fields}


def _bounded(details: Any) -> Any:
    """At most MAX_DETAILS entries at each level, with field names (a client's: unknown
    fields are named) masked as messages are, and cut short."""
    if isinstance(details, dict):
        return {
            masked(str(name))[:_MAX_NAME]: _bounded(value)
            for name, value in list(details.items())[:MAX_DETAILS]
        }
    if isinstance(details, list):
        return [_bounded(value) for value in details[:MAX_DETAILS]]
    return details


#: The message of every 400 that a request's fields fail, beside their ``details``.
VALIDATION_MESSAGE = "The request is invalid; see details"


def _validation_error(data: dict[str, Any]) -> Response:
    details = _validation_details(data)
    message = VALIDATION_MESSAGE
    if len(details) > MAX_DETAILS:
        message += f" (the first {MAX_DETAILS} of {len(details)} fields)"
    return error_response(400, "invalid_request", message, details=_bounded(details))


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None)
    if status in (400, 422) and data:
        return _validation_error(data)
    code = _CODES.get(status) or ("invalid_request" if status < 500 else "internal_error")
    message = _MESSAGES.get(status) or error.description or code
    # Keep what the protocol needs (Allow on 405, for instance), drop the HTML content type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return error_response(status, code, message, headers=headers)


def handle_service_error(error: ServiceError) -> Response:
    return error_response(
        error.status, error.code, error.message, error.details, headers=error.headers
    )


def handle_overload(error: MaxConnectionsExceeded) -> Response:
    _unavailable.warning("no database connection free in time: %s", error)
    return error_response(
        503,
        "service_unavailable",
        "The service is overloaded; retry shortly",
        headers={"Retry-After": "1"},
    )


def handle_database_error(error: PeeweeException) -> Response:
    """The database failed (locked past its timeout, disk full, read-only, down): 503.

    A constraint that no caller expected is a bug, and stays a 500.
    """
    if isinstance(error, IntegrityError):
        return handle_unexpected(error)
    db.discard_connection()
    # The driver's first line names the fault; later lines may quote the statement's values.
    reason = str(error).strip().partition("\n")[0]
    _unavailable.warning("database unavailable: %s: %s", type(error).__name__, reason)
    # A COMMIT that failed once sent may have taken effect: "retry" would repeat it.
    message = OutcomeUnknown.message if deadline.outcome_unknown() else ServiceUnavailable.message
    return error_response(503, "service_unavailable", message, headers={"Retry-After": "1"})


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return error_response(500, "internal_error", _MESSAGES[500])


def init_app(app: Flask) -> None:
    # HTTPException is registered by the Api subclass in app.py, which routes it here.
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(MaxConnectionsExceeded, handle_overload)
    app.register_error_handler(DatabaseError, handle_database_error)
    app.register_error_handler(InterfaceError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)
