"""Rate limits: per key when a request authenticates, per client address when it fails.

Counters live in Redis (``REDIS_URL``) so that they hold across workers and instances;
without Redis they live in this process's memory, which suits local use only. If Redis
becomes unreachable the limiter falls back to in-memory counters and logs it, and
requests are still served and still authenticated.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address

from apikeys.auth import current_principal


def _key_id() -> str:
    return current_principal().key_id


def _authenticated() -> bool:
    return current_principal() is not None


def _anonymous() -> bool:
    return current_principal() is None


def _guard(limiter: Limiter, blueprint: Blueprint) -> None:
    """Apply the per-key and the failed-authentication limits to every route of ``blueprint``."""
    # Shared scopes: one budget per key (or address) across all guarded blueprints.
    limiter.shared_limit(
        lambda: current_app.config["RATE_LIMIT_PER_KEY"],
        scope="key",
        key_func=_key_id,
        exempt_when=_anonymous,
    )(blueprint)
    limiter.shared_limit(
        lambda: current_app.config["RATE_LIMIT_FAILED_AUTH"],
        scope="failed-auth",
        key_func=get_remote_address,
        exempt_when=_authenticated,
    )(blueprint)


def _standard_headers(response: Response) -> Response:
    """Align flask-limiter's headers with the RateLimit header fields.

    It sends the reset as a Unix time where RateLimit-Reset means seconds from now, and
    Retry-After on every response where only a 429 asks the client to wait.
    """
    reset_at = response.headers.get("RateLimit-Reset")
    if reset_at and reset_at.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset_at) - int(time.time())))
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app: Flask, guarded: list[Blueprint]) -> Limiter:
    """Rate-limit the ``guarded`` blueprints of ``app``.

    One Limiter per app: flask-limiter keeps the first app's key prefix and strategy in
    the instance, so a shared one would let one app's settings leak into the next.
    """
    limiter = Limiter(
        key_func=get_remote_address,
        headers_enabled=True,
        header_name_mapping={
            HeaderNames.LIMIT: "RateLimit-Limit",
            HeaderNames.REMAINING: "RateLimit-Remaining",
            HeaderNames.RESET: "RateLimit-Reset",
        },
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    if app.config["REDIS_URL"]:
        app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
        # Fail fast when Redis hangs rather than holding the request.
        app.config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        )
    else:
        app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    # Registered before the limiter's own hook, so it runs after it (Flask runs them in reverse).
    app.after_request(_standard_headers)
    limiter.init_app(app)
    for blueprint in guarded:
        _guard(limiter, blueprint)
    return limiter
