"""Authentication of HTTP requests: which key a request presents and what it may do."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Mapping
from typing import overload

from flask import current_app, g, request

from apikeys.errors import Forbidden, Unauthorized
from apikeys.serving import HIDDEN_HEADERS
from apikeys.verification import Principal, verify

#: OpenAPI security requirement: either header authenticates.
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <key>",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


@overload
def header(environ: Mapping[str, str], name: str) -> str | None: ...
@overload
def header(environ: Mapping[str, str], name: str, default: str) -> str: ...
def header(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The request header ``name``, read from the WSGI ``environ``.

    werkzeug's ``request.headers`` raises and catches a KeyError for every header a
    request lacks; the hot path asks for several that most requests lack.
    """
    return environ.get(_environ_key(name), default)


@functools.cache
def _environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def presented_secret(environ: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer`` or ``X-API-Key``; None if absent or ambiguous."""
    hidden = environ.get(HIDDEN_HEADERS)
    if hidden and ("authorization" in hidden or "x-api-key" in hidden):
        # One of them is not ASCII (its value unseen): the other may not be the only key.
        return None
    authorization = header(environ, "Authorization")
    api_key = header(environ, "X-API-Key")
    bearer = None
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        bearer = token.strip()
    if bearer is not None and api_key is not None:
        # Two different keys on one request: refuse rather than guess.
        return bearer if hmac.compare_digest(bearer.encode(), api_key.strip().encode()) else None
    return bearer or (api_key.strip() if api_key else None)


def authenticate() -> None:
    """Verify the key the request presents, once, before anything else of the blueprint's
    runs: a ``before_request`` for every blueprint whose routes take a key. A request
    without a valid key goes on unauthenticated (its address's budget is spent next);
    ``current_key`` refuses it."""
    g.principal = verify(
        presented_secret(request.environ), current_app.config["LAST_USED_INTERVAL_SECONDS"]
    )


def verified_key() -> Principal | None:
    """The key ``authenticate`` verified for this request, None if it presented none valid:
    for the steps that serve authenticated and anonymous requests alike (the budget)."""
    return g.principal


def current_key(*scopes: str) -> Principal:
    """The request's verified key, holding every one of ``scopes``: Unauthorized without
    a valid key, Forbidden if it lacks one of them."""
    caller: Principal | None = g.principal
    if caller is None:
        raise Unauthorized()
    for scope in scopes:
        if scope not in caller.scopes:
            raise Forbidden(f"Your key lacks the required scope {scope}")
    return caller


def requires(scope: str) -> Callable:
    """Decorate a view so that it runs only for a key holding ``scope``."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            current_key(scope)
            return view(*args, **kwargs)

        return wrapper

    return decorator
