"""Rate limits: per key when a request authenticates, per client address when it fails.

A blueprint spends each request's budget in a ``before_request`` of its own, beside its
views and after ``auth.authenticate``, whose verified key says whose budget it is:
``spend_budget`` (one unit, the API's routes) or ``spend_budget_from_lease`` (the check,
the hot path); ``show_budget`` writes the RateLimit headers. Both spend one budget
through the app's LeasedLimiter (apikeys/leases.py). Nothing here verifies a key.

Counters live in Redis (``REDIS_URL``) so that they hold across workers and instances;
without Redis they live in this process's memory, which suits local use only. If Redis
fails, budgets are counted in memory and requests are still served and authenticated.

flask-limiter is the service's rate-limit library by name and configuration: its
``Limiter`` builds the storage from ``RATELIMIT_STORAGE_URI`` and
``RATELIMIT_STORAGE_OPTIONS`` and reads ``RATELIMIT_ENABLED``; budgets are named under
``RATELIMIT_KEY_PREFIX`` as it named them. It declares no limit of its own and runs no
hook on the app's requests: the spending is done here, on ``limits``' public API.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from redis.backoff import NoBackoff
from redis.retry import Retry

from apikeys import key_limits, metrics
from apikeys.auth import verified_key
from apikeys.errors import RateLimited
from apikeys.leases import LeasedLimiter, Window

#: Every Redis call, the lease script and the readiness probe included, gives up after
#: this: a Redis that hangs costs a request at most these seconds, and then only the one
#: request per retry interval that tries it again. No retries, said outright (redis-py's
#: clients built from a URL make none today): a retry would multiply the bound.
REDIS_OPTIONS = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "retry": Retry(NoBackoff(), retries=0),
}


def init_app(app: Flask) -> Limiter:
    """Build ``app``'s rate-limit storage and the budgets spent on it (none when
    RATELIMIT_ENABLED is False).

    One Limiter per app: flask-limiter keeps the first app's settings in the instance, so
    a shared one would let one app's settings leak into the next.
    """
    if app.config["REDIS_URL"]:
        app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            **REDIS_OPTIONS,
            **app.config.get("RATELIMIT_STORAGE_OPTIONS", {}),
        }
    else:
        app.config.setdefault("RATELIMIT_STORAGE_URI", "memory://")
    limiter = Limiter(key_func=get_remote_address)
    limiter.init_app(_settings_of(app))
    app.extensions["apikeys.limiter"] = limiter
    app.extensions["apikeys.budgets"] = LeasedLimiter(limiter.storage) if limiter.enabled else None
    return limiter


def spend_budget() -> None:
    """Spend one unit of the request's budget, counted as it is spent; RateLimited when
    the budget is spent. A ``before_request`` for a blueprint."""
    if not _automatic_options():
        _spend(lease=False)


def spend_budget_from_lease() -> None:
    """``spend_budget``, from this worker's lease of the budget: for the hot path, whose
    routes answer OPTIONS themselves (the check does, as a check)."""
    _spend(lease=True)


def show_budget(response: Response) -> Response:
    """The RateLimit headers of the budget the request spent (and Retry-After when it was
    refused). An ``after_request`` for a blueprint that spends one."""
    window = g.get("rate_window")
    if window:
        response.headers.extend(window.headers())
    return response


def storage_state(app: Flask) -> str:
    """What the rate-limit storage says now, for readiness and metrics: "ok", "down",
    "refusing writes", "not configured" (in memory) or "disabled"."""
    budgets: LeasedLimiter | None = app.extensions["apikeys.budgets"]
    return budgets.storage_state() if budgets else "disabled"


def _spend(lease: bool) -> None:
    app: Flask = cast(Any, current_app)._get_current_object()  # once, not on each use
    budgets: LeasedLimiter | None = app.extensions["apikeys.budgets"]
    if budgets is None:
        return
    caller, limits = _budget(app.config)
    prefix = app.config.get("RATELIMIT_KEY_PREFIX", "")
    # The names flask-limiter gave these budgets (a limit shared under the scope "caller").
    identifiers = (prefix, caller, "caller") if prefix else (caller, "caller")
    shown: Window | None = None
    for item in _parsed(limits):
        window = budgets.spend(item, *identifiers, lease=lease)
        # The headers show the refused limit, or else the one with the least left.
        if shown is None or not window.allowed or window.remaining < shown.remaining:
            shown = window
        if not window.allowed:
            break
    g.rate_window = shown
    if shown is not None and not shown.allowed:
        metrics.count_rejection(caller.partition("/")[0])
        raise RateLimited()


def _budget(config: Mapping[str, Any]) -> tuple[str, str]:
    """Whose budget a request spends, and its limits: its key's (its own limit, or the
    service's), or its address's when it fails to authenticate."""
    principal = verified_key()
    if principal:
        return f"key/{principal.key_id}", key_limits.spent(principal.rate_limit, config)
    return f"address/{get_remote_address()}", config["RATE_LIMIT_FAILED_AUTH"]


def _settings_of(app: Flask) -> Flask:
    """A Flask object with ``app``'s settings that serves nothing, for flask-limiter to
    initialise on: it builds the storage from them and registers its request hooks there.

    On ``app`` those hooks would run on every request, /healthz and the check included,
    with no limit of flask-limiter's own to apply (the blueprints spend their budgets
    themselves), at about the cost of /healthz's own work; flask-limiter has no public
    way to confine them.
    """
    holder = Flask(app.import_name)
    holder.config.update(app.config)
    return holder


def _automatic_options() -> bool:
    """Flask's own answer to OPTIONS (a browser's preflight) carries no key and asks nothing
    of the service: it must not spend an address's failed-authentication budget."""
    rule = request.url_rule
    return request.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False)


@functools.lru_cache(maxsize=16)
def _parsed(limits: str) -> list[RateLimitItem]:
    """The limits ``limits`` states, the tightest of each window length only: a window's
    count is one, whatever the amount (apikeys/leases.py), so two limits of one length
    (a key's own and a lowered cap's) would count each request twice."""
    tightest: dict[int, RateLimitItem] = {}
    for item in parse_many(limits):
        known = tightest.get(item.get_expiry())
        if known is None or item.amount < known.amount:
            tightest[item.get_expiry()] = item
    return sorted(tightest.values())
