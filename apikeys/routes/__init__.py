"""HTTP routes: a blueprint per resource; views parse, call the domain and return."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import flask_smorest
from flask import request
from marshmallow import Schema, ValidationError, missing
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from apikeys.audit import Origin
from apikeys.auth import SECURITY, current_key, header, requires
from apikeys.errors import InvalidRequest, ServiceError
from apikeys.http_errors import VALIDATION_MESSAGE
from apikeys.logs import request_id
from schemas.errors import ErrorSchema
from schemas.pagination import PageArgsSchema


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: parsers disagree on which of two wins,
    and a proxy in front may have checked the other one."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidRequest(
                "A JSON object has the same key twice",
                details={"body": [f"Duplicate key {key[:64]!r}."]},
            )
        seen.add(key)
    return dict(pairs)


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _Parser(FlaskParser):
    """webargs' parser, stricter: UTF-8 JSON (RFC 8259) with no repeated key, no NaN and no
    Infinity; a body too deep or a number too long is invalid JSON too; no query parameter
    given twice."""

    def load_json(self, req, schema):
        body = req.get_data(cache=True)
        # A chunked body has no Content-Length for werkzeug to refuse up front, and its
        # reader stops quietly at the maximum: a body that reaches it was cut short.
        if req.content_length is None and len(body) >= req.max_content_length:
            raise RequestEntityTooLarge()
        if not body:
            return missing
        if not req.is_json:
            raise InvalidRequest(
                "Send the body as JSON, with Content-Type: application/json",
                details={"body": ["Not declared as application/json."]},
            )
        try:
            # UTF-8 whatever the Content-Type's charset says: JSON defines none (RFC 8259, 11).
            text = body.decode("utf-8")
            return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
        except (RecursionError, ValueError) as error:
            # Not only JSONDecodeError: UnicodeDecodeError, the digit limit of int() and
            # the recursion limit too; a 400, never a 500.
            self._handle_invalid_json_error(error, req)  # type: ignore[arg-type]

    def load_querystring(self, req, schema):
        # webargs takes a repeated parameter's first value and drops the rest: which one a
        # client (or a proxy in front) meant is not ours to guess.
        repeated = sorted(
            name for name in req.args if name in schema.fields and len(req.args.getlist(name)) > 1
        )
        if repeated:
            raise InvalidRequest(
                f"{repeated[0]} is given more than once; give it once",
                details={name: ["Given more than once."] for name in repeated},
            )
        return super().load_querystring(req, schema)


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's blueprint, reading request bodies with the parser above."""

    ARGUMENTS_PARSER = _Parser()


def documented(*decorators: Callable) -> Callable:
    """Apply flask-smorest's decorators to a view for the OpenAPI document only.

    Each of them wraps the view in a call that runs on every request, and the response
    decorator dumps the result through its schema as well; on the hot path these cost
    more than the view's own work. The view writes the JSON the documented schema
    describes itself; the tests hold the two together.
    """

    def decorator(view: Callable) -> Callable:
        described = view
        for decorate in reversed(decorators):
            described = decorate(described)
        view._apidoc = described._apidoc  # type: ignore[attr-defined]
        return view

    return decorator


def _header(description: str, kind: str = "string") -> dict:
    return {"schema": {"type": kind}, "description": description, "required": True}


#: What a limited response carries, and what a refused one adds; documented as required,
#: so that the contract fuzzer holds the service to them.
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": _header("The key's (or address's) budget per window.", "integer"),
    "RateLimit-Remaining": _header("What is left of it.", "integer"),
    "RateLimit-Reset": _header("Seconds until the window rolls over.", "integer"),
}
#: The same on the answers a budget let through: absent only when rate limits are off.
BUDGET_HEADERS = {name: {**doc, "required": False} for name, doc in RATE_LIMIT_HEADERS.items()}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": _header('Bearer realm="api"')},
    429: {**RATE_LIMIT_HEADERS, "Retry-After": _header("Seconds to wait.", "integer")},
}


#: The service's errors each status can be: classes, or errors that show their own message
#: and details.
Codes = Mapping[int, Iterable[type[ServiceError] | ServiceError]]


def error_responses(
    blp: Blueprint,
    *errors: int,
    descriptions: Mapping[int, str] | None = None,
    headers: Mapping[str, Any] | None = None,
    codes: Codes | None = None,
) -> list[Callable]:
    """flask-smorest decorators documenting each error status, in the error shape, with
    ``headers`` common to them all and the status's own (which win); ``codes`` names the
    service's errors a status can be, each given in the description and as an example
    (an error itself rather than its class gives its own message and details)."""
    descriptions, codes = descriptions or {}, codes or {}
    decorators = []
    for status in sorted(errors):
        kinds = list(codes.get(status, ()))
        description = descriptions.get(status, HTTPStatus(status).phrase)
        if kinds:
            description += ": " + ", ".join(f"`{kind.code}`" for kind in kinds)
        examples = {kind.code: {"value": {"error": _example(kind)}} for kind in kinds}
        decorators.append(
            blp.alt_response(
                status,
                schema=ErrorSchema,
                description=description,
                examples=examples or None,
                headers={**(headers or {}), **ERROR_HEADERS.get(status, {})} or None,
            )
        )
    return decorators


def _example(error: type[ServiceError] | ServiceError) -> dict[str, Any]:
    shown = {"code": error.code, "message": error.message}
    details = getattr(error, "details", None)  # an error's own, not its class's
    return shown if details is None else {**shown, "details": details}


def invalid_field(schema: type[Schema], name: str, value: Any) -> InvalidRequest:
    """The 400 that ``schema`` answers for ``value`` in its field ``name``, in the schema's
    own words: for the documents' examples."""
    try:
        schema().fields[name].deserialize(value)
    except ValidationError as error:
        return InvalidRequest(VALIDATION_MESSAGE, {name: error.messages})
    raise ValueError(f"{value!r} is a valid {name}")


#: What a listing's 400 can be: a ``limit`` or ``after`` it cannot read.
BAD_PAGE = {400: (invalid_field(PageArgsSchema, "limit", "0"),)}


def protected(
    blp: Blueprint,
    scope: str,
    *errors: int,
    codes: Codes | None = None,
) -> Callable:
    """Require ``scope``, and document the security and every error the view can answer
    (``codes``: as for ``error_responses``)."""

    def decorator(view: Callable) -> Callable:
        view = requires(scope)(view)
        every = error_responses(blp, 401, 403, 429, *errors, headers=BUDGET_HEADERS, codes=codes)
        for document in every:
            view = document(view)
        return blp.doc(security=SECURITY)(view)

    return decorator


def origin() -> Origin:
    """Who makes a change over HTTP, for the audit log: the request's key, id, client
    address (through APIKEYS_TRUSTED_PROXIES, as the service sees it) and user agent."""
    return Origin(
        "key",
        current_key().key_id,
        request_id(),
        request.remote_addr,
        header(request.environ, "User-Agent"),
    )
