"""/api/v1/auth/check: may the presented key make the forwarded request? A proxy's hot path.

A reverse proxy (nginx ``auth_request``, Traefik ``forwardAuth``) or a backend forwards the
caller's ``Authorization`` or ``X-API-Key`` and says what the request is, in any of:

- ``X-Required-Scope``: the scope itself;
- ``X-Original-Method`` and ``X-Original-URI`` (nginx), through the route policy;
- ``X-Forwarded-Method`` and ``X-Forwarded-Uri`` (Traefik), through the route policy.

The key must hold the scope that every one of them present asks for. Proxies pass the
client's own headers on to the check, so a client could add one of these headers; it can
only narrow what passes, never widen it (a precedence would let it pick its own scope).
For the same reason the check fails closed on anything it cannot read as one value: a
header it reads sent twice is a 400 (servers join the copies into one value), a URI with
a comma in its path, which is what two joined URIs look like, is denied (``_route_scopes``
says how one in the query is read), as is a URI that is not ASCII (``apikeys.serving``
names it, without its value). Headers with ``_`` in their name never reach it
(``apikeys.serving`` and werkzeug's server drop them), so ``X_Original_URI`` cannot stand
in for ``X-Original-URI``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from flask import Response, current_app, request

from apikeys.auth import SECURITY, authenticate, current_key, header
from apikeys.errors import Forbidden, InvalidRequest
from apikeys.policy import METHODS, Policy
from apikeys.ratelimit import show_budget, spend_budget_from_lease
from apikeys.routes import BUDGET_HEADERS, Blueprint, documented, error_responses
from apikeys.scopes import SCOPES, normalize
from apikeys.serving import HIDDEN_HEADERS, REPEATED_HEADERS
from apikeys.verification import Principal
from schemas.check import CheckSchema

blp = Blueprint(
    "check",
    __name__,
    url_prefix="/api/v1/auth",
    description="Forward authentication for reverse proxies and backends.",
)
# As for the API: the key is verified, then the check spends its key's budget (its
# address's if it failed), from this worker's lease of it.
blp.before_request(authenticate)
blp.before_request(spend_budget_from_lease)
blp.after_request(show_budget)

#: The forwarded (method, URI) header pairs: nginx's, then Traefik's.
ROUTE_HEADERS = (
    ("X-Original-Method", "X-Original-URI"),
    ("X-Forwarded-Method", "X-Forwarded-Uri"),
)
#: Every header the check reads: none may be sent twice.
CHECKED_HEADERS = ("Authorization", "X-API-Key", "X-Required-Scope") + tuple(
    name for pair in ROUTE_HEADERS for name in pair
)
_TEXT = {"type": "string"}
_HEADER_DOCS = [
    {"in": "header", "name": name, "schema": schema, "description": description}
    for name, schema, description in (
        (
            "X-Required-Scope",
            {"type": "string", "enum": list(SCOPES)},
            "The scope the request needs, such as read:billing.",
        ),
        ("X-Original-Method", _TEXT, "nginx: the request's method, for the route policy."),
        ("X-Original-URI", _TEXT, "nginx: the request's URI ($request_uri), for the route policy."),
        ("X-Forwarded-Method", _TEXT, "Traefik: the request's method, for the route policy."),
        ("X-Forwarded-Uri", _TEXT, "Traefik: the request's URI, for the route policy."),
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
#: The error object again, on every error answer: nginx's auth_request never passes a
#: subrequest's body on, so deploy/nginx.conf answers the client with this header instead.
ERROR_HEADER = "X-Auth-Error"
_ERROR_HEADERS = {
    ERROR_HEADER: {
        "schema": {"type": "string"},
        "description": "The response's body, the error object, for proxies that drop it.",
    }
}


def refuse_repeated(environ: Mapping[str, Any]) -> None:
    """InvalidRequest if a header the check reads came more than once.

    Only servers that say which headers repeated (``apikeys.serving``) are covered; under
    others, the joined value is read as one and fails as an unknown scope, key or method,
    or as a URI with a comma.
    """
    repeated = environ.get(REPEATED_HEADERS)
    if repeated:
        for name in CHECKED_HEADERS:
            if name.lower() in repeated:
                raise InvalidRequest(f"{name} is sent more than once; send it once")


def required_scopes(environ: Mapping[str, str], policy: Policy) -> list[str]:
    """Every scope the check's headers (in the WSGI ``environ``) ask for.

    A proxy misconfiguration must show, so it is a 400 (which nginx turns into a 500, as
    it does any answer but 2xx, 401 and 403): InvalidRequest when the headers say nothing
    to check or only half a method/URI pair, InvalidScope for an unknown X-Required-Scope.
    Forbidden for a route the policy does not know, or a URI it cannot read.
    """
    required: list[str] = []
    hidden = environ.get(HIDDEN_HEADERS, ())
    scope = header(environ, "X-Required-Scope", "").strip()
    if scope:
        required.extend(normalize([scope]))
    for method_header, uri_header in ROUTE_HEADERS:
        method = header(environ, method_header, "").strip()
        uri = header(environ, uri_header, "").strip()
        # Hidden: not ASCII (a client's raw bytes, passed on), so it cannot be judged.
        hidden_uri = uri_header.lower() in hidden
        if not method and not uri and not hidden_uri:
            continue
        if not hidden_uri and (not method or not uri):
            missing = uri_header if method else method_header
            raise InvalidRequest(f"{missing} is missing; send it with {method or uri_header}")
        route_scopes = None if hidden_uri else _route_scopes(policy, method, uri)
        if route_scopes is None:
            raise Forbidden("The route policy allows no key this method on this path")
        required.extend(route_scopes)
    if not required:
        raise InvalidRequest(
            "Say what to check: X-Required-Scope, X-Original-Method and X-Original-URI, "
            "or X-Forwarded-Method and X-Forwarded-Uri"
        )
    return required


def _route_scopes(policy: Policy, method: str, uri: str) -> list[str] | None:
    """Every scope a ``method`` request to ``uri`` needs; None if the policy denies it.

    A comma may be two copies of the header joined into one (by a server that does not
    say so, or a proxy that appends): one in the path is never judged, as either reading
    could be the real one. One in the query is the query's own (``?ids=1,2``), unless what
    follows it starts as a URI does: that is judged as well, so a joined copy can only add
    to what the key needs.
    """
    path, _, query = uri.partition("?")
    if "," in path:
        return None
    pieces = (piece.strip() for piece in query.split(",")[1:])
    joined = [piece for piece in pieces if piece.startswith(("/", "*")) or "://" in piece]
    scopes = []
    for each in (uri, *joined):
        scope = policy.required_scope(method, each)
        if scope is None:
            return None
        scopes.append(scope)
    return scopes


@blp.route("/check", methods=list(METHODS))
@documented(
    blp.doc(security=SECURITY, parameters=_HEADER_DOCS),
    blp.response(200, CheckSchema, headers=_ANSWER_HEADERS | BUDGET_HEADERS),
    *error_responses(
        blp,
        400,
        401,
        403,
        429,
        descriptions={
            400: "No target, an unknown scope, or a header sent twice",
            403: "Lacks the scope, or an unknown route",
        },
        headers=_ERROR_HEADERS | BUDGET_HEADERS,
    ),
)
def check():
    """May the presented key make the forwarded request? (Any method; see the headers)"""
    environ = request.environ
    refuse_repeated(environ)
    current_key()  # a missing or invalid key is a 401 before anything about the target
    policy = current_app.extensions["apikeys.policy"]
    caller = current_key(*required_scopes(environ, policy))
    body, headers = _answer(caller)
    return Response(body, headers=headers)


@blp.after_request
def _error_in_header(response: Response) -> Response:
    if response.status_code >= 400:
        # jsonify's body is ASCII (non-ASCII is escaped) and ends with a newline to drop.
        response.headers[ERROR_HEADER] = response.get_data(as_text=True).strip()
    return response


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
