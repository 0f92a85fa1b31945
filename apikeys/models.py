"""Organizations and their API keys, and the rules that hold whoever calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from peewee import (
    CharField,
    DateTimeField,
    Field,
    ForeignKeyField,
    IntegrityError,
    Model,
)

from apikeys import crypto, scopes
from apikeys.db import database
from apikeys.errors import KeyNotFound, NameTaken


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo: the form every timestamp is stored in."""
    return datetime.now(UTC).replace(tzinfo=None)


class ScopesField(Field):
    """A tuple of scope names, stored as one space-separated string."""

    field_type = "TEXT"

    def db_value(self, value: tuple[str, ...]) -> str:
        return scopes.serialize(value)

    def python_value(self, value: str) -> tuple[str, ...]:
        return scopes.deserialize(value)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Organization(BaseModel):
    id = CharField(primary_key=True, max_length=40, default=lambda: crypto.new_id("org"))
    name = CharField(max_length=128, unique=True)
    created_at = DateTimeField(default=utcnow)

    @classmethod
    def ensure(cls, name: str) -> Organization:
        """The organization called ``name``, created if missing (safe under concurrency)."""
        cls.insert(
            id=crypto.new_id("org"), name=name, created_at=utcnow()
        ).on_conflict_ignore().execute()
        return cls.get(cls.name == name)


@dataclass(frozen=True)
class IssuedKey:
    """A key as created: the only object that ever carries the secret."""

    api_key: ApiKey
    key: str = field(repr=False)  # kept out of any log line or traceback that shows it

    def __getattr__(self, name: str):
        return getattr(self.api_key, name)


class ApiKey(BaseModel):
    id = CharField(primary_key=True, max_length=40, default=lambda: crypto.new_id("key"))
    organization = ForeignKeyField(Organization, backref="api_keys", on_delete="CASCADE")
    name = CharField(max_length=128)
    key_hash = CharField(max_length=64, unique=True)
    key_hint = CharField(max_length=16)
    scopes = ScopesField()
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)

    @classmethod
    def update(cls, __data=None, **update):
        """An UPDATE; one that sets ``revoked_at`` only reaches live keys: revocation is final.

        ``save()`` goes through here too, so neither an explicit ``revoked_at = None`` nor a
        stale instance saved after a revocation can bring a revoked key back.
        """
        query = super().update(__data, **update)
        if cls.revoked_at in query._update:
            query = query.where(cls.revoked_at.is_null())
        return query

    @classmethod
    def issue(
        cls,
        organization_id: str,
        name: str,
        granted: tuple[str, ...],
        expires_in_days: int | None = None,
        secret: str | None = None,
    ) -> IssuedKey:
        """Create a key; its secret is returned here once and only its hash is kept."""
        secret = secret or crypto.generate_secret()
        now = utcnow()
        expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            with database.atomic():
                api_key = cls.create(
                    organization=organization_id,
                    name=name,
                    key_hash=crypto.hash_secret(secret),
                    key_hint=crypto.hint(secret),
                    scopes=granted,
                    created_at=now,
                    expires_at=expires_at,
                )
        except IntegrityError:
            # The partial unique index on (organization, live name) decides races.
            raise NameTaken() from None
        return IssuedKey(api_key, secret)

    @classmethod
    def live(cls, organization_id: str):
        """The organization's keys that are not revoked, newest first."""
        return (
            cls.select()
            .where(cls.organization == organization_id, cls.revoked_at.is_null())
            .order_by(cls.created_at.desc(), cls.id.desc())
        )

    @classmethod
    def find(cls, organization_id: str, key_id: str) -> ApiKey:
        """One live key of the organization; another organization's key is simply not found."""
        _ensure_plausible(key_id)
        api_key = cls.live(organization_id).where(cls.id == key_id).first()
        if api_key is None:
            raise KeyNotFound()
        return api_key

    @classmethod
    def revoke(cls, organization_id: str, key_id: str) -> None:
        """Revoke for good: only a live key can be revoked, and nothing un-revokes it."""
        _ensure_plausible(key_id)
        revoked = (
            cls.update(revoked_at=utcnow())
            .where(
                cls.id == key_id,
                cls.organization == organization_id,
                cls.revoked_at.is_null(),
            )
            .execute()
        )
        if not revoked:
            raise KeyNotFound()


def _ensure_plausible(key_id: str) -> None:
    """An id with a NUL byte is no key's (PostgreSQL cannot even compare it): not found."""
    if "\x00" in key_id:
        raise KeyNotFound()
