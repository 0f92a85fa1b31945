"""What the API and the CLI can do with keys, with every rule applied in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from marshmallow import ValidationError

from apikeys import audit, crypto, key_limits, scopes
from apikeys.audit import Origin
from apikeys.config import ConfigError
from apikeys.db import database
from apikeys.errors import (
    Forbidden,
    InvalidRequest,
    KeyNotFound,
    NameTaken,
    OrganizationNotFound,
)
from apikeys.models import (
    ApiKey,
    IssuedKey,
    Organization,
    OrganizationPolicy,
    RetiredKeyHash,
    RolledKey,
    utcnow,
)
from apikeys.pagination import Listing, Page, paginate
from schemas.fields import clean_name

#: GET /api/v1/org/api-keys: an organization's live keys, newest first.
KEYS = Listing("api-keys", ApiKey.created_at, ApiKey.id, kind="key")

#: What a PATCH may change.
CHANGEABLE = ("name", "scopes", "expires_in_days", "rate_limit")


def create_organization(name: str) -> Organization:
    return Organization.create(name=name)


def find_organization(id_or_name: str) -> Organization:
    """An organization by its id or, failing that, its name."""
    organization = Organization.get_or_none(Organization.id == id_or_name) or (
        Organization.get_or_none(Organization.name == id_or_name)
    )
    if organization is None:
        raise OrganizationNotFound(f"No organization with id or name {id_or_name!r}")
    return organization


def create_key(
    organization_id: str,
    name: str,
    requested_scopes: Iterable[str],
    expires_in_days: int | None = None,
    grantor_scopes: Iterable[str] | None = None,
    *,
    rate_limit: str | None = None,
    rate_limit_cap: str | None = None,
    origin: Origin = audit.CLI,
) -> IssuedKey:
    """Issue a key; a grantor (the calling key) can only hand out scopes it holds; the
    organization's policy and the rate-limit cap apply. ``origin`` is who asks, for the
    audit log: the operator's tools (the CLI) unless a request says otherwise."""
    granted = scopes.normalize(requested_scopes)
    if grantor_scopes is not None:
        scopes.ensure_grantable(granted, grantor_scopes)
    _ensure_within_cap(rate_limit, rate_limit_cap)
    now = utcnow()
    with database.atomic():
        OrganizationPolicy.of(organization_id).ensure_allows(_expiry(expires_in_days, now), now)
        issued = ApiKey.issue(
            organization_id, name, granted, expires_in_days, rate_limit=rate_limit, now=now
        )
        audit.record(audit.CREATED, organization_id, issued.id, origin)
    return issued


def update_key(
    organization_id: str,
    key_id: str,
    changes: Mapping[str, Any],
    *,
    origin: Origin = audit.CLI,
    grantor_scopes: Iterable[str] | None = None,
    rate_limit_cap: str | None = None,
) -> ApiKey:
    """Change a key's ``name``, ``scopes`` (replaced), ``expires_in_days`` (from now; None:
    never) or ``rate_limit`` (None: the service's); what ``changes`` leaves out stays.

    A grantor (the calling key) cannot leave the key holding a scope it
    lacks itself, whether it sets the scopes or not. The organization's policy applies to
    a new expiry.
    """
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if not changes or unknown:
        raise InvalidRequest(f"Give one or more of {', '.join(CHANGEABLE)}")
    fields: dict[str, Any] = {}
    if "scopes" in changes:
        fields["scopes"] = scopes.normalize(changes["scopes"])
    if "name" in changes:
        fields["name"] = changes["name"]
    if "rate_limit" in changes:
        _ensure_within_cap(changes["rate_limit"], rate_limit_cap)
        fields["rate_limit"] = changes["rate_limit"]
    now = utcnow()
    with database.atomic():
        api_key = ApiKey.find_for_change(organization_id, key_id)
        if grantor_scopes is not None:
            refusal = (
                "Your key cannot grant scopes it does not hold"
                if "scopes" in fields
                else "Your key cannot change a key holding scopes it lacks"
            )
            scopes.ensure_grantable(fields.get("scopes", api_key.scopes), grantor_scopes, refusal)
        if "expires_in_days" in changes:
            fields["expires_at"] = _expiry(changes["expires_in_days"], now)
            # Only a new expiry is the policy's to judge: the key's own (no expiry, given
            # again) changes nothing, as for every other field.
            if fields["expires_at"] != api_key.expires_at:
                OrganizationPolicy.of(organization_id).ensure_allows(fields["expires_at"], now)
        changed = audit.diff({name: getattr(api_key, name) for name in fields}, fields)
        # Values equal to the key's own change nothing: no write, and no event to record.
        if changed:
            written = {name: after for name, (_, after) in changed.items()}
            # No secret of the key outlives it: a grace period past its new expiry ends with it.
            expires_at, until = written.get("expires_at"), api_key.previous_key_expires_at
            if expires_at and until and expires_at < until:
                written["previous_key_expires_at"] = expires_at
            api_key.change(**written)
            audit.record(audit.UPDATED, organization_id, api_key.id, origin, changed)
    return api_key


def roll_key(
    organization_id: str,
    key_id: str,
    grace_period_seconds: int = 0,
    *,
    origin: Origin = audit.CLI,
    grantor_scopes: Iterable[str] | None = None,
    by_previous_secret: bool = False,
) -> RolledKey:
    """Give a key a new secret; the current one keeps working for ``grace_period_seconds``.

    The secret is the key's power, so a grantor (the calling key) must
    hold every scope of the key it rolls. The key's expiry must meet the organization's
    policy as it is now (PATCH it first if a policy set since forbids it).

    A key may not be rolled with its own previous secret (``by_previous_secret``, in a
    grace period): a leaked secret would get a new one, and end the one its owner rolled for.
    """
    now = utcnow()
    if by_previous_secret and origin.key_id == key_id:
        raise Forbidden("A key's previous secret cannot roll it; use its current secret")
    with database.atomic():
        api_key = ApiKey.find_for_change(organization_id, key_id)
        if grantor_scopes is not None:
            scopes.ensure_grantable(
                api_key.scopes, grantor_scopes, "Your key cannot roll a key holding scopes it lacks"
            )
        OrganizationPolicy.of(organization_id).ensure_allows(api_key.expires_at, now, rolling=True)
        rolled = api_key.roll(timedelta(seconds=grace_period_seconds), now)
        audit.record(audit.ROLLED, organization_id, api_key.id, origin)
    return rolled


def get_policy(organization_id: str) -> OrganizationPolicy:
    return OrganizationPolicy.of(organization_id)


def set_policy(organization_id: str, **rules: Any) -> OrganizationPolicy:
    """Set an organization's ``max_expires_in_days`` (None: no maximum) or
    ``require_expiry``; existing keys are left as they are."""
    return OrganizationPolicy.put(organization_id, **rules)


def _expiry(expires_in_days: int | None, now: datetime) -> datetime | None:
    return now + timedelta(days=expires_in_days) if expires_in_days else None


def _ensure_within_cap(rate_limit: str | None, cap: str | None) -> None:
    """InvalidRequest unless ``rate_limit`` is a valid limit within ``cap``
    (apikeys/key_limits.py says what exceeding means)."""
    if rate_limit is None:
        return
    if cap is None:
        raise TypeError("a rate_limit is checked against a cap: give rate_limit_cap")
    try:
        key_limits.parse(rate_limit)
    except ValueError as error:
        raise InvalidRequest(f"rate_limit: {error}", details={"rate_limit": [str(error)]}) from None
    if key_limits.exceeds(rate_limit, cap):
        message = f"Exceeds the most a key may be allowed by this service, {cap}."
        raise InvalidRequest(f"rate_limit: {message}", details={"rate_limit": [message]})


def list_keys(organization_id: str) -> list[ApiKey]:
    return list(ApiKey.live(organization_id))


def page_of_keys(
    organization_id: str, limit: int | None = None, after: str | None = None
) -> tuple[Page, int]:
    """A page of the organization's live keys, newest first, and how many it has in all."""
    live = ApiKey.live(organization_id)
    page = paginate(KEYS, live, organization_id, limit, after)
    return page, live.order_by().count()


def get_key(organization_id: str, key_id: str) -> ApiKey:
    return ApiKey.find(organization_id, key_id)


def revoke_key(organization_id: str, key_id: str, origin: Origin = audit.CLI) -> None:
    with database.atomic():
        ApiKey.revoke(organization_id, key_id)
        audit.record(audit.REVOKED, organization_id, key_id, origin)


def revoke_any(key_id: str, origin: Origin = audit.CLI) -> None:
    """Revoke a key of any organization (the operator's CLI)."""
    api_key = ApiKey.get_or_none(ApiKey.id == key_id, ApiKey.revoked_at.is_null())
    if api_key is None:
        raise KeyNotFound(f"No live key with id {key_id!r}")
    revoke_key(api_key.organization_id, key_id, origin)


def bootstrap(secret: str, organization_name: str) -> None:
    """Seed ``secret`` with every scope, once: a key that exists (even revoked) is left alone."""
    if not crypto.is_well_formed(secret):
        raise ConfigError(
            "APIKEYS_BOOTSTRAP_KEY is not a valid key; "
            "unset it and make one with `flask --app app keys generate`"
        )
    try:
        organization_name = clean_name(organization_name)
    except ValidationError as error:
        raise ConfigError(
            f"APIKEYS_BOOTSTRAP_ORG is not a valid name: {' '.join(error.messages)}"
        ) from None
    digest = crypto.hash_secret(secret)

    def seeded() -> bool:
        # A secret rolled away is never seeded again, though the environment still holds it.
        return (
            ApiKey.select().where(ApiKey.key_hash == digest).exists()
            or RetiredKeyHash.select().where(RetiredKeyHash.key_hash == digest).exists()
        )

    with database.connection_context(), database.atomic():
        if seeded():
            return
        organization = Organization.ensure(organization_name)
        # Its last four characters tell it apart, and without the keys' prefix a client
        # may send the name back as it read it (a name with the prefix is refused).
        name = f"bootstrap ...{secret[-4:]}"
        try:
            issued = ApiKey.issue(organization.id, name, scopes.SCOPES, secret=secret)
        except NameTaken:
            # Another worker seeded the same key a moment ago: that is the goal.
            if not seeded():
                raise
            return
        audit.record(audit.CREATED, organization.id, issued.id, audit.BOOTSTRAP)
