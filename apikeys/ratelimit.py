"""Rate limits: per key when a request authenticates, per client address when it fails.

Counters live in Redis (``REDIS_URL``) so that they hold across workers and instances;
without Redis they live in this process's memory, which suits local use only. If Redis
becomes unreachable the limiter falls back to in-memory counters and logs it, and
requests are still served and still authenticated.

The API's routes are limited by flask-limiter. The check, the hot path, spends the same
budgets through leases (apikeys/leases.py), which spare it most round trips to Redis.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, g, request
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from apikeys.auth import current_principal
from apikeys.errors import RateLimited
from apikeys.leases import LeasedLimiter


def _budget() -> tuple[str, str]:
    """Whose budget a request spends, and its limits: its key's, or its address's when it
    fails to authenticate."""
    principal = current_principal()
    if principal:
        return f"key/{principal.key_id}", current_app.config["RATE_LIMIT_PER_KEY"]
    return f"address/{get_remote_address()}", current_app.config["RATE_LIMIT_FAILED_AUTH"]


def _caller() -> str:
    return _budget()[0]


def _caller_limit() -> str:
    return _budget()[1]


def _authenticate() -> None:
    """Verify the request's key before flask-limiter's hook does, in its key function:
    flask-limiter takes any error raised there, a database error included, for Redis
    being down, and falls back to in-memory counters."""
    current_principal()


def _automatic_options() -> bool:
    """Flask's own answer to OPTIONS (a browser's preflight) carries no key and asks nothing
    of the service: it must not spend an address's failed-authentication budget."""
    rule = request.url_rule
    return request.method == "OPTIONS" and rule is not None and rule.provide_automatic_options


def _guard(limiter: Limiter, blueprint: Blueprint) -> None:
    """Apply the per-key and the failed-authentication limits to every route of ``blueprint``.

    They are one flask-limiter limit whose key and amount follow the request: the per-key
    budget when it authenticates, its address's failed-authentication budget when not.
    Two limits, each exempt when the other applies, would do the same at twice the cost:
    flask-limiter resolves every limit of a route on every request.
    """
    # A shared scope: one budget per key (or address) across all guarded blueprints.
    limiter.shared_limit(_caller_limit, scope="caller", key_func=_caller)(blueprint)


@functools.lru_cache(maxsize=16)
def _parsed(limits: str) -> list[RateLimitItem]:
    return sorted(parse_many(limits))


def _spend_from_lease(leases: LeasedLimiter, prefix: str) -> None:
    """Spend the budget flask-limiter would, from this worker's lease: RateLimited when spent.

    The same limits, keys (under flask-limiter's key ``prefix``) and scope as
    ``_guard``'s, so that a key's checks and its API requests spend one budget.
    """
    caller, limits = _budget()
    identifiers = (prefix, caller, "caller") if prefix else (caller, "caller")
    shown = None
    for item in _parsed(limits):
        window = leases.spend(item, *identifiers)
        # The headers show the refused limit, or else the one with the least left.
        if shown is None or not window.allowed or window.remaining < shown.remaining:
            shown = window
        if not window.allowed:
            break
    g.rate_window = shown
    if not shown.allowed:
        raise RateLimited()


def _standard_headers(response: Response) -> Response:
    """Align flask-limiter's headers with the RateLimit header fields, or add the lease's.

    flask-limiter sends the reset as a Unix time where RateLimit-Reset means seconds from
    now, and Retry-After on every response where only a 429 (or a 503) asks the client
    to wait.
    """
    window = g.get("rate_window")
    if window:
        response.headers.extend(window.headers())
        return response
    reset_at = response.headers.get("RateLimit-Reset")
    if reset_at and reset_at.isdigit():
        response.headers["RateLimit-Reset"] = str(max(0, int(reset_at) - int(time.time())))
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


def _hook_first(hooks: dict[str | None, list], blueprints: list[str], hook: Callable) -> None:
    """Put ``hook`` first in the ``hooks`` (one of Flask's per-blueprint dicts) of each of
    ``blueprints``: per blueprint, so that a request of another blueprint never runs it."""
    for name in blueprints:
        hooks.setdefault(name, []).insert(0, hook)


def _confine(app: Flask, limiter: Limiter, blueprints: list[str]) -> None:
    """Run the request hooks ``limiter`` has just registered for ``blueprints`` only.

    It registers them app-wide, and they cost a request it does not limit (the leased
    check) about a quarter of that request's own work.
    """
    for hooks in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        hook = hooks[None].pop()
        if limiter not in (getattr(hook, "__self__", None), *getattr(hook, "args", ())):
            raise RuntimeError(f"not a hook of flask-limiter's: {hook!r}")
        for name in blueprints:
            hooks.setdefault(name, []).append(hook)


def init_app(app: Flask, guarded: list[Blueprint], leased: list[Blueprint]) -> Limiter:
    """Rate-limit the ``guarded`` blueprints of ``app`` with flask-limiter, and the
    ``leased`` ones with leases of the same budgets.

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
    # Two Redis round trips per request (the hit, then the window for the headers) where
    # fixed-window takes three, and no burst of twice the limit across a window's edge;
    # O(1) in Redis where moving-window keeps a timestamp per request; and the strategy
    # leases need. bench/README.md has the numbers.
    app.config["RATELIMIT_STRATEGY"] = "sliding-window-counter"
    if app.config["REDIS_URL"]:
        app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
        # Fail fast when Redis hangs rather than holding the request.
        app.config.setdefault(
            "RATELIMIT_STORAGE_OPTIONS", {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        )
    else:
        app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    limiter.init_app(app)
    limiter.request_filter(_automatic_options)
    guarded_names = [blueprint.name for blueprint in guarded]
    leased_names = [blueprint.name for blueprint in leased]
    leases = None
    if limiter.enabled:  # RATELIMIT_ENABLED=False: flask-limiter sets up nothing at all
        _confine(app, limiter, guarded_names)
        # flask-limiter's own fallback storage (it has no public name for it), so that
        # the routes and the check still spend one budget while Redis is down.
        leases = LeasedLimiter(limiter.storage, getattr(limiter, "_fallback_storage", None))
    # First in each blueprint's lists: Flask runs before_request hooks in order, and
    # after_request hooks in reverse, so these run around flask-limiter's.
    _hook_first(app.before_request_funcs, guarded_names, _authenticate)
    if leases:
        # flask-limiter read its key prefix once, in init_app.
        prefix = app.config.get("RATELIMIT_KEY_PREFIX", "")
        spend = functools.partial(_spend_from_lease, leases, prefix)
        _hook_first(app.before_request_funcs, leased_names, spend)
    _hook_first(app.after_request_funcs, guarded_names + leased_names, _standard_headers)
    app.extensions["apikeys.limiter"] = limiter
    for blueprint in guarded:
        _guard(limiter, blueprint)
    return limiter
