"""Organizations and their API keys, and the rules that hold whoever calls."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

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
from apikeys.errors import KeyNotFound, KeyRevoked, NameTaken


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


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as created: the only object that ever carries the secret."""

    id: str
    organization_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    key: str = field(repr=False)  # kept out of any log line or traceback that shows it


class StoredKey(NamedTuple):
    """A live key as the lookup by hash reads it: what verifying a secret needs. (A tuple:
    built on every check, where a frozen dataclass costs several times as much.)"""

    id: str
    organization_id: str
    key_hash: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKey(BaseModel):
    id = CharField(primary_key=True, max_length=40, default=lambda: crypto.new_id("key"))
    organization = ForeignKeyField(Organization, backref="api_keys", on_delete="CASCADE")
    organization_id: str  # peewee's accessor for the column itself, without a query
    name = CharField(max_length=128)
    key_hash = CharField(max_length=64, unique=True)
    key_hint = CharField(max_length=16)
    scopes = ScopesField()
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)

    def save(self, force_insert: bool = False, only=None) -> int:
        """Write the key. Revocation is final: saving a key that is revoked, or that was
        revoked after this instance was read, raises KeyRevoked and changes nothing.

        ``save`` never writes ``revoked_at``: ``revoke`` is the one way to set it. A bulk
        ``ApiKey.update`` query is plain SQL, below these rules, as any raw statement is.
        """
        if force_insert:
            return super().save(force_insert=True, only=only)
        if self.revoked_at is not None:
            raise KeyRevoked()
        names = [getattr(name, "name", name) for name in only or self._meta.sorted_fields]
        with database.atomic():
            rows = super().save(only=[name for name in names if name != "revoked_at"])
            # Read under this write's lock: a revocation committed before it shows here,
            # and one that comes later waits for this transaction.
            live = ApiKey.select().where(ApiKey.id == self.id, ApiKey.revoked_at.is_null())
            if not live.exists():
                raise KeyRevoked()  # and the write is rolled back
        return rows

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
        return IssuedKey(
            api_key.id, organization_id, name, granted, now, expires_at, key=secret
        )

    @classmethod
    def find_by_secret_hash(cls, digest: str) -> StoredKey | None:
        """The live key stored with the hash ``digest``, or None; whether it has expired is
        the caller's to judge. The hot path's one read, run from SQL rendered once."""
        opened = database.obj
        kind: type = type(opened)
        row = opened.execute_sql(_lookup_sql(kind), (digest,)).fetchone()
        if row is None:
            return None
        key_id, organization_id, key_hash, stored_scopes, expires_at, last_used_at = row
        return StoredKey(
            key_id,
            organization_id,
            key_hash,
            scopes.deserialize(stored_scopes),
            _timestamp(expires_at),
            _timestamp(last_used_at),
        )

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


@functools.cache
def _lookup_sql(dialect: type) -> str:
    """``find_by_secret_hash``'s SQL, rendered once per kind of database rather than once
    per request: building a peewee query costs more than SQLite takes to answer it. It
    depends on nothing but the model's columns, so it never goes stale in a process."""
    query = ApiKey.select(
        ApiKey.id,
        ApiKey.organization,
        ApiKey.key_hash,
        ApiKey.scopes,
        ApiKey.expires_at,
        ApiKey.last_used_at,
    ).where(ApiKey.key_hash == "", ApiKey.revoked_at.is_null())
    sql, _params = query.sql()
    return sql


def _timestamp(value: datetime | str | None) -> datetime | None:
    """A stored timestamp: SQLite hands back the text peewee wrote, PostgreSQL a datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _ensure_plausible(key_id: str) -> None:
    """An id with a NUL byte is no key's (PostgreSQL cannot even compare it): not found."""
    if "\x00" in key_id:
        raise KeyNotFound()
