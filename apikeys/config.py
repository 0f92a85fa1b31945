"""Settings from the environment, read in one place with typed defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from apikeys import key_limits

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: A century; far beyond it, the cut-off date would leave datetime's range.
MAX_RETENTION_DAYS = 36_500


class ConfigError(Exception):
    """A setting has a value the service cannot start with. serve.py and the ``flask``
    commands (apikeys.cli) stop on it with one line, not a traceback."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None


def from_environment(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The service's settings: the environment over the embedded defaults."""
    return {
        "DATABASE_URL": env.get("DATABASE_URL") or "sqlite:///apikeys.db",
        "REDIS_URL": env.get("REDIS_URL") or None,
        "RATE_LIMIT_PER_KEY": env.get("RATE_LIMIT_PER_KEY") or "1000/minute",
        "RATE_LIMIT_FAILED_AUTH": env.get("RATE_LIMIT_FAILED_AUTH") or "60/minute",
        # The most a key's own rate_limit may allow; unset: RATE_LIMIT_PER_KEY.
        "RATE_LIMIT_MAX_PER_KEY": env.get("RATE_LIMIT_MAX_PER_KEY") or None,
        # flask-limiter's own setting: what budgets are named under in the storage, so that
        # deployments sharing one Redis database count apart.
        "RATELIMIT_KEY_PREFIX": env.get("RATELIMIT_KEY_PREFIX", "").strip(),
        "LAST_USED_INTERVAL_SECONDS": _int(env, "LAST_USED_INTERVAL_SECONDS", 60),
        # Connections per process; a request waits this many seconds for one, then 503.
        "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", 32),
        "DATABASE_POOL_TIMEOUT": _int(env, "DATABASE_POOL_TIMEOUT", 10),
        # The longest a query waits on the database: SQLite's write lock, a PostgreSQL
        # connect, statement or lock; then 503.
        "DATABASE_TIMEOUT": _seconds(env, "DATABASE_TIMEOUT", 5),
        "APIKEYS_BOOTSTRAP_KEY": env.get("APIKEYS_BOOTSTRAP_KEY") or None,
        "APIKEYS_BOOTSTRAP_ORG": env.get("APIKEYS_BOOTSTRAP_ORG") or "default",
        # Proxies in front that set X-Forwarded-For: the client address (the failed-auth
        # limit's key) is then read from it. 0: the peer's address, as on a bare port.
        "APIKEYS_TRUSTED_PROXIES": _int(env, "APIKEYS_TRUSTED_PROXIES", 0),
        # Route-to-scope rules for /api/v1/auth/check; unset: apikeys.policy.DEFAULT.
        "APIKEYS_POLICY_FILE": env.get("APIKEYS_POLICY_FILE") or None,
        # Audit events older than this are no longer listed, and are deleted.
        "AUDIT_RETENTION_DAYS": _int(env, "AUDIT_RETENTION_DAYS", 365),
        # Request bodies are a name, a few scopes and a number: 64 KiB is generous.
        "MAX_CONTENT_LENGTH": 64 * 1024,
        # One line per request and every other log line: "json" (one object per line) or "text".
        "LOG_FORMAT": (env.get("LOG_FORMAT") or "json").strip().lower(),
        "LOG_LEVEL": (env.get("LOG_LEVEL") or "INFO").strip().upper(),
    }


def validate(config: Mapping[str, Any]) -> None:
    """Refuse to start on a setting that would only fail later, at request time."""
    for name in ("RATE_LIMIT_PER_KEY", "RATE_LIMIT_FAILED_AUTH", "RATE_LIMIT_MAX_PER_KEY"):
        if name == "RATE_LIMIT_MAX_PER_KEY" and not config.get(name):
            continue  # unset: RATE_LIMIT_PER_KEY
        try:
            # As strict as a key's own: a limit of 0 would refuse every request for ever,
            # with a Retry-After that promises otherwise.
            key_limits.parse(config[name])
        except ValueError:
            raise ConfigError(
                f"{name} must be a rate limit such as '1000/minute' (each limit at least 1 "
                f"request, at most {key_limits.MAX_LIMITS} limits), got {config[name]!r}"
            ) from None
    if key_limits.exceeds(config["RATE_LIMIT_PER_KEY"], key_limits.cap(config)):
        raise ConfigError("RATE_LIMIT_PER_KEY must not exceed RATE_LIMIT_MAX_PER_KEY")
    # peewee's pool reads a timeout of 0 as "wait forever".
    for name in ("DATABASE_POOL_SIZE", "DATABASE_POOL_TIMEOUT"):
        if config[name] < 1:
            raise ConfigError(f"{name} must be at least 1")
    if not 0 < config["DATABASE_TIMEOUT"] <= 3600:
        raise ConfigError("DATABASE_TIMEOUT must be a number of seconds above 0, at most 3600")
    if config["APIKEYS_TRUSTED_PROXIES"] < 0:
        raise ConfigError("APIKEYS_TRUSTED_PROXIES must not be negative")
    if not 1 <= config["AUDIT_RETENTION_DAYS"] <= MAX_RETENTION_DAYS:
        raise ConfigError(
            f"AUDIT_RETENTION_DAYS must be a number of days from 1 to {MAX_RETENTION_DAYS}"
        )
    if config["LAST_USED_INTERVAL_SECONDS"] < 0:
        raise ConfigError("LAST_USED_INTERVAL_SECONDS must not be negative")
    for name, choices in (("LOG_FORMAT", LOG_FORMATS), ("LOG_LEVEL", LOG_LEVELS)):
        if str(config[name]).lower() not in (choice.lower() for choice in choices):
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {config[name]!r}")
