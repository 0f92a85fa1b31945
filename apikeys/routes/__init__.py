"""HTTP routes: a blueprint per resource; views parse, call the domain and return."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus

import flask_smorest
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import RequestEntityTooLarge

from apikeys.auth import SECURITY, requires
from apikeys.errors import InvalidRequest
from schemas.errors import ErrorSchema


class _Parser(FlaskParser):
    """webargs' parser, for which a body too deep or a number too long is invalid JSON too."""

    def load_json(self, req, schema):
        # A chunked body has no Content-Length for werkzeug to refuse up front, and its
        # reader stops quietly at the maximum: a body that reaches it was cut short.
        if req.content_length is None and len(req.get_data(cache=True)) >= req.max_content_length:
            raise RequestEntityTooLarge()
        if not req.is_json and req.get_data(cache=True):
            raise InvalidRequest(
                "Send the body as JSON, with Content-Type: application/json",
                details={"body": ["Not declared as application/json."]},
            )
        try:
            return super().load_json(req, schema)
        except (RecursionError, ValueError) as error:
            # json.loads raises these rather than JSONDecodeError: a 400, never a 500.
            self._handle_invalid_json_error(error, req)


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
        view._apidoc = described._apidoc
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
ERROR_HEADERS = {
    401: {"WWW-Authenticate": _header('Bearer realm="api"')},
    429: {**RATE_LIMIT_HEADERS, "Retry-After": _header("Seconds to wait.", "integer")},
}


def error_responses(
    blp: Blueprint, *errors: int, descriptions: Mapping[int, str] | None = None
) -> list[Callable]:
    """flask-smorest decorators documenting each error status, in the error shape."""
    descriptions = descriptions or {}
    return [
        blp.alt_response(
            status,
            schema=ErrorSchema,
            description=descriptions.get(status, HTTPStatus(status).phrase),
            headers=ERROR_HEADERS.get(status),
        )
        for status in sorted(errors)
    ]


def protected(blp: Blueprint, scope: str, *errors: int) -> Callable:
    """Require ``scope``, and document the security and every error the view can answer."""

    def decorator(view: Callable) -> Callable:
        view = requires(scope)(view)
        for document in error_responses(blp, 401, 403, 429, *errors):
            view = document(view)
        return blp.doc(security=SECURITY)(view)

    return decorator
