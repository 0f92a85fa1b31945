"""Organizations and their API keys, and the rules that hold whoever calls."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    Field,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    Model,
)

from apikeys import crypto, scopes
from apikeys.db import database
from apikeys.errors import KeyNotFound, KeyRevoked, NameTaken, PolicyViolation


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


class OrganizationPolicy(BaseModel):
    """What an organization demands of its keys' lifetimes: checked when a key is created,
    updated or rolled, never retroactively."""

    organization = ForeignKeyField(
        Organization, primary_key=True, backref="policy", on_delete="CASCADE"
    )
    max_expires_in_days = IntegerField(null=True)
    require_expiry = BooleanField(default=False)
    organization_id: str  # peewee's accessor for the column itself, without a query

    @classmethod
    def of(cls, organization_id: str) -> OrganizationPolicy:
        """The organization's policy: an empty one (unsaved) when none was ever set."""
        found = cls.get_or_none(cls.organization == organization_id)
        return found or cls(organization=organization_id, max_expires_in_days=None)

    @classmethod
    def put(cls, organization_id: str, **rules: object) -> OrganizationPolicy:
        """Set ``rules`` (``max_expires_in_days``, ``require_expiry``), keeping the others."""
        with database.atomic():
            cls.insert(organization=organization_id).on_conflict_ignore().execute()
            if rules:
                cls.update(**rules).where(cls.organization == organization_id).execute()
            return cls.get(cls.organization == organization_id)

    def as_dict(self) -> dict[str, object]:
        return {
            "org_id": self.organization_id,
            "max_expires_in_days": self.max_expires_in_days,
            "require_expiry": bool(self.require_expiry),
        }

    def ensure_allows(
        self, expires_at: datetime | None, now: datetime, *, rolling: bool = False
    ) -> None:
        """PolicyViolation, naming the rule, if a key valid until ``expires_at`` (None:
        forever) breaks this policy at ``now``. A maximum lifetime implies an expiry.

        A create or PATCH asks for the expiry itself; a roll (``rolling``) keeps the key's
        own, which only a PATCH changes, and the message tells the client so.
        """
        most = self.max_expires_in_days
        if self.require_expiry and expires_at is None:
            rule, demand, wanted = "require_expiry", "demands that keys expire", "expires_in_days"
            details: dict[str, object] = {"rule": rule}
        elif most is not None and (expires_at is None or expires_at > now + timedelta(days=most)):
            rule = "max_expires_in_days"
            demand = f"lets a key be valid for at most {most} days from now"
            wanted = f"expires_in_days of {most} or less"
            details = {"rule": rule, "max_expires_in_days": most}
        else:
            return
        if rolling:
            held = "never expires" if expires_at is None else "expires later"
            remedy = f"this key {held}; PATCH it with {wanted} first, then roll it"
        else:
            remedy = f"give {wanted}"
        message = f"Your organization's policy {rule} {demand}: {remedy}"
        raise PolicyViolation(message, details=details)


class RetiredKeyHash(BaseModel):
    """The hash of a secret rolled away: kept so that it can never be issued again (the
    bootstrap key's secret, still in the environment, say)."""

    key_hash = CharField(primary_key=True, max_length=64)
    api_key = CharField(max_length=40)
    retired_at = DateTimeField(default=utcnow)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as created: the only object that ever carries the secret."""

    id: str
    organization_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    rate_limit: str | None
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
    previous_key_hash: str | None  # a roll's previous secret, valid until the next field
    previous_key_expires_at: datetime | None
    rate_limit: str | None


@dataclass(frozen=True, slots=True)
class RolledKey:
    """A key as rolled: the key object as it now is, its new secret, and until when the
    previous secret still works (now, when it stopped at once)."""

    id: str
    name: str
    key_hint: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    rate_limit: str | None
    previous_key_valid_until: datetime
    key: str = field(repr=False)


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
    # A roll's previous secret, valid until previous_key_expires_at (a grace period).
    previous_key_hash = CharField(max_length=64, null=True, unique=True)
    previous_key_expires_at = DateTimeField(null=True)
    # The key's own limit (flask-limiter syntax); None: the service's RATE_LIMIT_PER_KEY.
    rate_limit = CharField(max_length=256, null=True)

    @property
    def previous_key_valid_until(self) -> datetime | None:
        """When the previous secret stops working; None when none works now."""
        until = self.previous_key_expires_at
        return until if until is not None and until > utcnow() else None

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
        rate_limit: str | None = None,
        now: datetime | None = None,
    ) -> IssuedKey:
        """Create a key; its secret is returned here once and only its hash is kept."""
        secret = secret or crypto.generate_secret()
        now = now or utcnow()
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
                    rate_limit=rate_limit,
                )
        except IntegrityError:
            # The partial unique index on (organization, live name) decides races.
            raise NameTaken() from None
        return IssuedKey(
            api_key.id, organization_id, name, granted, now, expires_at, rate_limit, key=secret
        )

    @classmethod
    def find_by_secret_hash(cls, digest: str) -> StoredKey | None:
        """The live key whose current or previous secret has the hash ``digest``, or None;
        whether it has expired, or its grace period ended, is the caller's to judge. The
        hot path's one read, run from SQL rendered once."""
        opened = database.obj
        kind: type = type(opened)
        row = opened.execute_sql(lookup_sql(kind), (digest, digest)).fetchone()
        if row is None:
            return None
        key_id, organization_id, key_hash, stored_scopes, expires_at, last_used_at = row[:6]
        previous_hash, previous_until, rate_limit = row[6:]
        return StoredKey(
            key_id,
            organization_id,
            key_hash,
            scopes.deserialize(stored_scopes),
            _timestamp(expires_at),
            _timestamp(last_used_at),
            previous_hash,
            _timestamp(previous_until),
            rate_limit,
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
    def find_for_change(cls, organization_id: str, key_id: str) -> ApiKey:
        """``find``, the row held until the transaction ends: a roll, an update and a
        revocation of one key take turns (PostgreSQL locks the row; SQLite's write
        transactions already hold the whole file)."""
        _ensure_plausible(key_id)
        query = cls.live(organization_id).where(cls.id == key_id)
        api_key = (query.for_update() if database.obj.for_update else query).first()
        if api_key is None:
            raise KeyNotFound()
        return api_key

    def change(self, **fields: object) -> None:
        """Write ``fields`` to this live key; NameTaken if a new name is another live key's."""
        try:
            with database.atomic():
                changed = (
                    ApiKey.update(**fields)
                    .where(ApiKey.id == self.id, ApiKey.revoked_at.is_null())
                    .execute()
                )
        except IntegrityError:
            # The partial unique index on (organization, live name) decides races.
            raise NameTaken() from None
        if not changed:
            raise KeyNotFound()
        for name, value in fields.items():
            setattr(self, name, value)

    def roll(self, grace: timedelta, now: datetime) -> RolledKey:
        """A new secret; the current one stays valid for ``grace`` (none if zero), and any
        older previous secret stops at once: only the newest previous secret works."""
        secret = crypto.generate_secret()
        RetiredKeyHash.insert(key_hash=self.key_hash, api_key=self.id, retired_at=now).execute()
        # No secret of the key outlives the key: a grace past its expiry ends with it.
        until = now + grace if self.expires_at is None else min(now + grace, self.expires_at)
        in_grace = until > now
        self.change(
            key_hash=crypto.hash_secret(secret),
            key_hint=crypto.hint(secret),
            previous_key_hash=self.key_hash if in_grace else None,
            previous_key_expires_at=until if in_grace else None,
        )
        return RolledKey(
            self.id,
            self.name,
            self.key_hint,
            self.scopes,
            self.created_at,
            self.last_used_at,
            self.expires_at,
            self.rate_limit,
            max(now, until),
            key=secret,
        )

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
def lookup_sql(dialect: type) -> str:
    """``find_by_secret_hash``'s SQL, rendered once per kind of database rather than once
    per request: building a peewee query costs more than SQLite takes to answer it. It
    depends on nothing but the model's columns, so it never goes stale in a process."""
    columns = (
        ApiKey.id,
        ApiKey.organization,
        ApiKey.key_hash,
        ApiKey.scopes,
        ApiKey.expires_at,
        ApiKey.last_used_at,
        ApiKey.previous_key_hash,
        ApiKey.previous_key_expires_at,
        ApiKey.rate_limit,
    )
    live = ApiKey.revoked_at.is_null()
    # Either of a key's secrets, each by its own (unique) index: the current one first,
    # so that the usual check reads one row of one index and stops there; an OR of the
    # two would make SQLite probe both and merge the rows it found.
    current = ApiKey.select(*columns).where(ApiKey.key_hash == "", live)
    previous = ApiKey.select(*columns).where(ApiKey.previous_key_hash == "", live)
    sql, _params = (current + previous).sql()  # UNION ALL
    return sql


def _timestamp(value: datetime | str | None) -> datetime | None:
    """A stored timestamp: SQLite hands back the text peewee wrote, PostgreSQL a datetime."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _ensure_plausible(key_id: str) -> None:
    """An id with a NUL byte is no key's (PostgreSQL cannot even compare it): not found."""
    if "\x00" in key_id:
        raise KeyNotFound()
