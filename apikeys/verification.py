"""The hot path: from a presented secret to the principal it authenticates, or None."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from apikeys import crypto
from apikeys.models import ApiKey, utcnow


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: one live key of one organization."""

    key_id: str
    org_id: str
    scopes: frozenset[str]


_LOOKUP = ApiKey.select(
    ApiKey.id,
    ApiKey.organization,
    ApiKey.key_hash,
    ApiKey.scopes,
    ApiKey.expires_at,
    ApiKey.last_used_at,
).where(ApiKey.revoked_at.is_null())


def verify(
    secret: str | None, last_used_interval: int, now: datetime | None = None
) -> Principal | None:
    """The principal for ``secret``; None for a missing, malformed, unknown, expired or revoked key.

    Reads the database every time, so a revocation is seen by the very next request on
    any worker; writes only when ``last_used_at`` is older than ``last_used_interval``.
    """
    if not secret or not crypto.is_well_formed(secret):
        return None
    digest = crypto.hash_secret(secret)
    row = _LOOKUP.where(ApiKey.key_hash == digest).tuples().first()
    if row is None:
        return None
    key_id, org_id, stored_hash, scopes, expires_at, last_used_at = row
    now = now or utcnow()
    if not hmac.compare_digest(stored_hash, digest) or (expires_at and expires_at <= now):
        return None
    if last_used_at is None or now - last_used_at >= timedelta(seconds=last_used_interval):
        _touch(key_id, now, last_used_interval)
    return Principal(key_id, org_id, frozenset(scopes))


def _touch(key_id: str, now: datetime, interval: int) -> None:
    """Record use; the condition lets one worker win when several race for the same key."""
    stale = now - timedelta(seconds=interval)
    (
        ApiKey.update(last_used_at=now)
        .where(
            ApiKey.id == key_id,
            ApiKey.last_used_at.is_null() | (ApiKey.last_used_at <= stale),
        )
        .execute()
    )
