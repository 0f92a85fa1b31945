"""The hot path: from a presented secret to the principal it authenticates, or None."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import Database, PeeweeException

from apikeys import crypto, db, metrics
from apikeys.db import database
from apikeys.models import ApiKey, utcnow

log = logging.getLogger(__name__)

#: How long a write of last use may wait for a lock, and how long the process stops trying
#: after one failed: the check answers from the read alone meanwhile.
TOUCH_PATIENCE_MS = 100
TOUCH_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: one live key of one organization."""

    key_id: str
    org_id: str
    scopes: frozenset[str]
    rate_limit: str | None = None  # the key's own; None: the service's RATE_LIMIT_PER_KEY
    #: Presented its previous secret, in a roll's grace period: it may not roll the key.
    previous_secret: bool = False


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
    stored = ApiKey.find_by_secret_hash(digest)
    if stored is None:
        return None
    now = now or utcnow()
    expires_at, last_used_at = stored.expires_at, stored.last_used_at
    # The row was found by this hash; comparing again in constant time keeps the rule that
    # nothing derived from a secret is compared with ==, whatever the database's collation.
    # A previous secret (a roll's) works only until its grace period ends.
    current = hmac.compare_digest(stored.key_hash, digest)
    previous_until = stored.previous_key_expires_at
    if not current and not _in_grace(stored.previous_key_hash, digest, previous_until, now):
        return None
    if expires_at and expires_at <= now:
        return None
    if last_used_at is None or now - last_used_at >= timedelta(seconds=last_used_interval):
        _record_use(stored.id, now, last_used_interval)
    scopes = frozenset(stored.scopes)
    return Principal(stored.id, stored.organization_id, scopes, stored.rate_limit, not current)


def _in_grace(
    previous_hash: str | None, digest: str, until: datetime | None, now: datetime
) -> bool:
    """Whether ``digest`` is the key's previous secret's, still within its grace period."""
    return (
        previous_hash is not None
        and until is not None
        and now < until
        and hmac.compare_digest(previous_hash, digest)
    )


@dataclass(frozen=True, slots=True)
class _Outage:
    """Writes of last use to ``database`` failed; the next try is at ``resume_at``."""

    database: Database
    resume_at: float


_outage: _Outage | None = None
_outage_lock = threading.Lock()


def _record_use(key_id: str, now: datetime, interval: int) -> None:
    """Best effort: a database that cannot take the write (locked, full, read-only) must
    not fail or hold up the check, which has all it needs from the read. A later check
    writes it once the back-off is over; one warning per outage."""
    global _outage
    opened, outage = database.obj, _outage
    if outage and outage.database is opened and time.monotonic() < outage.resume_at:
        return
    try:
        with db.impatient(TOUCH_PATIENCE_MS):
            _touch(key_id, now, interval)
    except PeeweeException as error:
        db.discard_connection()  # it may be the handle that is read-only, not the file
        with _outage_lock:  # threads that failed together: one of them says so
            known = _outage is not None and _outage.database is opened
            _outage = _Outage(opened, time.monotonic() + TOUCH_BACKOFF_SECONDS)
        if not known:
            log.warning(
                "cannot record keys' last use (%s); checks go on without it, retrying every %g s",
                str(error).partition("\n")[0],
                TOUCH_BACKOFF_SECONDS,
            )
        return
    metrics.count_last_used_write()
    if outage is not None:
        _outage = None
        if outage.database is opened:
            log.info("recording keys' last use again")


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
