"""/api/v1/auth/check: may the presented key make the forwarded request? A proxy's hot path.

A reverse proxy (nginx ``auth_request``, Traefik ``forwardAuth``) or a backend forwards the
caller's ``Authorization`` or ``X-API-Key`` and says what the request is, in any of:

- ``X-Required-Scope``: the scope itself;
- ``X-Original-Method`` and ``X-Original-URI`` (nginx), through the route policy;
- ``X-Forwarded-Method`` and ``X-Forwarded-Uri`` (Traefik), through the route policy.

The key must hold the scope that every one of them present asks for. Proxies pass the
client's own headers on to the check, so a client could add one of these headers; it can
only narrow what passes, never widen it (a precedence would let it pick its own scope).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from http import HTTPStatus

from flask import Response, current_app, request

from apikeys.auth import SECURITY, authenticated, authorize, header
from apikeys.errors import Forbidden, InvalidRequest
from apikeys.policy import METHODS, Policy
from apikeys.ratelimit import show_budget, spend_budget_from_lease
from apikeys.routes import Blueprint, documented
from apikeys.scopes import SCOPES, normalize
from apikeys.verification import Principal
from schemas.check import CheckSchema
from schemas.errors import ErrorSchema

blp = Blueprint(
    "check",
    __name__,
    url_prefix="/api/v1/auth",
    description="Forward authentication for reverse proxies and backends.",
)
# A check spends its key's budget like any API request, from this worker's lease of it.
blp.before_request(spend_budget_from_lease)
blp.after_request(show_budget)

#: The forwarded (method, URI) header pairs: nginx's, then Traefik's.
ROUTE_HEADERS = (
    ("X-Original-Method", "X-Original-URI"),
    ("X-Forwarded-Method", "X-Forwarded-Uri"),
)
_HEADER_DOCS = [
    {"in": "header", "name": name, "schema": {"type": "string"}, "description": description}
    for name, description in (
        ("X-Required-Scope", "The scope the request needs, such as read:billing."),
        ("X-Original-Method", "nginx: the request's method, for the route policy."),
        ("X-Original-URI", "nginx: the request's URI ($request_uri), for the route policy."),
        ("X-Forwarded-Method", "Traefik: the request's method, for the route policy."),
        ("X-Forwarded-Uri", "Traefik: the request's URI, for the route policy."),
    )
]
_ANSWER_HEADERS = {
    name: {"schema": {"type": "string"}, "description": description}
    for name, description in (
        ("X-Auth-Org-Id", "The key's organization."),
        ("X-Auth-Key-Id", "The key's id."),
        ("X-Auth-Scopes", "The key's scopes, space-separated."),
        ("Cache-Control", "no-store: an answer is for this request only."),
    )
}


def required_scopes(environ: Mapping[str, str], policy: Policy) -> list[str]:
    """Every scope the check's headers (in the WSGI ``environ``) ask for.

    A proxy misconfiguration must show, so it is a 400 (which nginx turns into a 500, as
    it does any answer but 2xx, 401 and 403): InvalidRequest when the headers say nothing
    to check or only half a method/URI pair, InvalidScope for an unknown X-Required-Scope.
    Forbidden for a route the policy does not know.
    """
    required = []
    scope = header(environ, "X-Required-Scope", "").strip()
    if scope:
        required.extend(normalize([scope]))
    for method_header, uri_header in ROUTE_HEADERS:
        method = header(environ, method_header, "").strip()
        uri = header(environ, uri_header, "").strip()
        if not method and not uri:
            continue
        if not method or not uri:
            missing = uri_header if method else method_header
            raise InvalidRequest(f"{missing} is missing; send it with {method or uri_header}")
        route_scope = policy.required_scope(method, uri)
        if route_scope is None:
            raise Forbidden("The route policy allows no key this method on this path")
        required.append(route_scope)
    if not required:
        raise InvalidRequest(
            "Say what to check: X-Required-Scope, X-Original-Method and X-Original-URI, "
            "or X-Forwarded-Method and X-Forwarded-Uri"
        )
    return required


@blp.route("/check", methods=list(METHODS))
@documented(
    blp.doc(security=SECURITY, parameters=_HEADER_DOCS),
    blp.response(200, CheckSchema, headers=_ANSWER_HEADERS),
    blp.alt_response(400, schema=ErrorSchema, description="No target, or an unknown scope"),
    blp.alt_response(401, schema=ErrorSchema, description=HTTPStatus(401).phrase),
    blp.alt_response(403, schema=ErrorSchema, description="Lacks the scope, or an unknown route"),
    blp.alt_response(429, schema=ErrorSchema, description=HTTPStatus(429).phrase),
)
def check():
    """May the presented key make the forwarded request? (Any method; see the headers)"""
    caller = authenticated()
    for scope in required_scopes(request.environ, current_app.extensions["apikeys.policy"]):
        authorize(scope, caller)
    body, headers = _answer(caller)
    return Response(body, headers=headers)


@functools.lru_cache(maxsize=4096)
def _answer(caller: Principal) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The check's body and headers for ``caller``: the same for every check of a key
    (verified on each), so rendered once per key rather than once per request."""
    scopes = [scope for scope in SCOPES if scope in caller.scopes]
    body = {"org_id": caller.org_id, "key_id": caller.key_id, "scopes": scopes}
    headers = (
        ("Content-Type", "application/json"),
        ("X-Auth-Org-Id", caller.org_id),
        ("X-Auth-Key-Id", caller.key_id),
        ("X-Auth-Scopes", " ".join(scopes)),
        ("Cache-Control", "no-store"),
    )
    return json.dumps(body), headers
