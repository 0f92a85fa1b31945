"""What the API and the CLI can do with keys, with every rule applied in one place."""

from __future__ import annotations

from collections.abc import Iterable

from marshmallow import ValidationError

from apikeys import audit, crypto, scopes
from apikeys.audit import Origin
from apikeys.config import ConfigError
from apikeys.db import database
from apikeys.errors import KeyNotFound, NameTaken, OrganizationNotFound
from apikeys.models import ApiKey, IssuedKey, Organization
from apikeys.pagination import Page, paginate
from schemas.fields import clean_name


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
    origin: Origin = audit.CLI,
) -> IssuedKey:
    """Issue a key; a grantor (the calling key) can only hand out scopes it holds.

    ``origin`` is who asks: the operator's tools (the CLI) unless a request says otherwise.
    """
    granted = scopes.normalize(requested_scopes)
    if grantor_scopes is not None:
        scopes.ensure_grantable(granted, grantor_scopes)
    with database.atomic():
        issued = ApiKey.issue(organization_id, name, granted, expires_in_days)
        audit.record(audit.CREATED, organization_id, issued.id, origin)
    return issued


def list_keys(organization_id: str) -> list[ApiKey]:
    return list(ApiKey.live(organization_id))


def page_of_keys(
    organization_id: str, limit: int | None = None, after: str | None = None
) -> tuple[Page, int]:
    """A page of the organization's live keys, newest first, and how many it has in all."""
    live = ApiKey.live(organization_id)
    page = paginate(live, ApiKey.created_at, ApiKey.id, limit, after)
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
    seeded = ApiKey.select().where(ApiKey.key_hash == crypto.hash_secret(secret))
    with database.connection_context(), database.atomic():
        if seeded.exists():
            return
        organization = Organization.ensure(organization_name)
        name = f"bootstrap {crypto.hint(secret)}"
        try:
            issued = ApiKey.issue(organization.id, name, scopes.SCOPES, secret=secret)
        except NameTaken:
            # Another worker seeded the same key a moment ago: that is the goal.
            if not seeded.exists():
                raise
            return
        audit.record(audit.CREATED, organization.id, issued.id, audit.BOOTSTRAP)
