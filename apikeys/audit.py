"""The audit log: one event for every change to a key, written in the change's transaction.

A service operation that changes a key calls ``record`` inside the ``database.atomic()``
that makes the change: the event and the change commit together or not at all. Who made
the change travels as an ``Origin``: a key over HTTP (with the request's id, client
address and user agent), the operator's CLI, or the bootstrap at start.

Events older than ``AUDIT_RETENTION_DAYS`` are never listed, and are deleted by
``prune``: at start and on ``flask db upgrade`` (apikeys/startup.py), and once an hour by
each serving process (``prune_when_due``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, g
from peewee import CharField, DateTimeField, ForeignKeyField, PeeweeException, TextField

from apikeys import crypto, db
from apikeys.models import BaseModel, Organization, utcnow
from apikeys.pagination import Listing, Page, paginate
from schemas.fields import RFC3339

log = logging.getLogger(__name__)

CREATED = "api_key.created"
UPDATED = "api_key.updated"
ROLLED = "api_key.rolled"
REVOKED = "api_key.revoked"
ACTIONS = (CREATED, UPDATED, ROLLED, REVOKED)
ACTORS = ("key", "cli", "bootstrap")

#: What a client sends is kept to this many characters (a user agent, an address).
MAX_CLIENT_TEXT = 256
PRUNE_EVERY = timedelta(hours=1)
#: How long a prune during a request may wait for another writer's lock before it gives
#: up until the next hour: the request's answer waits for it.
PRUNE_PATIENCE_MS = 100


@dataclass(frozen=True)
class Origin:
    """Who made a change, and from where: what an event says besides the change itself."""

    actor: str
    key_id: str | None = None
    request_id: str | None = None
    client_addr: str | None = None
    user_agent: str | None = None


CLI = Origin("cli")
BOOTSTRAP = Origin("bootstrap")


class AuditEvent(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    organization = ForeignKeyField(Organization, on_delete="CASCADE")
    time = DateTimeField()
    action = CharField(max_length=32)
    actor_type = CharField(max_length=16)
    actor_key_id = CharField(max_length=40, null=True)
    target_key_id = CharField(max_length=40)
    changes = TextField(null=True)  # JSON: {field: {"from": ..., "to": ...}}
    request_id = CharField(max_length=128, null=True)
    client_addr = CharField(max_length=MAX_CLIENT_TEXT, null=True)
    user_agent = CharField(max_length=MAX_CLIENT_TEXT, null=True)

    @property
    def actor(self) -> dict[str, str | None]:
        if self.actor_type == "key":
            return {"type": "key", "key_id": self.actor_key_id}
        return {"type": self.actor_type}

    @property
    def target(self) -> dict[str, str]:
        return {"key_id": self.target_key_id}

    @property
    def changed(self) -> dict[str, Any] | None:
        return None if self.changes is None else json.loads(self.changes)


def record(
    action: str,
    organization_id: str,
    key_id: str,
    origin: Origin,
    changes: Mapping[str, tuple[Any, Any]] | None = None,
) -> AuditEvent:
    """Write the event of one change; call it inside the transaction that makes the change.

    ``changes`` maps each changed field to its (before, after) values (updates only).
    Nothing a client wrote is kept unmasked: a key pasted into a user agent, a forwarded
    address or a name is written as ``[redacted]``.
    """
    if action not in ACTIONS or origin.actor not in ACTORS:
        raise ValueError(f"no such audit action or actor: {action!r}, {origin.actor!r}")
    return AuditEvent.create(
        id=crypto.new_id("evt"),
        organization=organization_id,
        time=utcnow(),
        action=action,
        actor_type=origin.actor,
        actor_key_id=origin.key_id,
        target_key_id=key_id,
        changes=None if changes is None else _changes_json(changes),
        request_id=origin.request_id,
        client_addr=_client_text(origin.client_addr),
        user_agent=_client_text(origin.user_agent),
    )


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The fields whose values differ, as ``record`` takes them."""
    return {name: (before[name], after[name]) for name in after if before[name] != after[name]}


def _plain(value: Any) -> Any:
    """A value as JSON shows it: times as RFC 3339, tuples as lists, text masked."""
    if isinstance(value, datetime):
        return value.strftime(RFC3339)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return crypto.masked(value)
    return value


def _changes_json(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return json.dumps(
        {name: {"from": _plain(old), "to": _plain(new)} for name, (old, new) in changes.items()}
    )


def _client_text(value: str | None) -> str | None:
    # Masked, then cut: a cut first could leave most of a key that straddles the cut (so
    # a key's length past it is masked too). A key without its prefix is masked as well.
    if value is None:
        return None
    kept = value[: MAX_CLIENT_TEXT + crypto.SECRET_LENGTH]
    return crypto.masked_bare(crypto.masked(kept))[:MAX_CLIENT_TEXT]


#: GET /api/v1/org/audit-events (and ``audit list``): an organization's events, newest first.
EVENTS = Listing("audit-events", AuditEvent.time, AuditEvent.id, kind="evt")


def _retained(organization_id: str, retention_days: int, now: datetime | None = None):
    oldest = (now or utcnow()) - timedelta(days=retention_days)
    return (
        AuditEvent.select()
        .where(AuditEvent.organization == organization_id, AuditEvent.time >= oldest)
        .order_by(AuditEvent.time.desc(), AuditEvent.id.desc())
    )


def events(
    organization_id: str, retention_days: int, limit: int | None = None, after: str | None = None
) -> tuple[Page, int]:
    """A page of the organization's events within retention, newest first, and their total."""
    retained = _retained(organization_id, retention_days)
    page = paginate(EVENTS, retained, organization_id, limit, after)
    return page, retained.order_by().count()


def prune(retention_days: int, now: datetime | None = None) -> int:
    """Delete the events older than ``retention_days``; how many were deleted."""
    expired = AuditEvent.time < (now or utcnow()) - timedelta(days=retention_days)
    # Read first: in the usual case there is nothing to delete, and no write lock to take.
    if not AuditEvent.select().where(expired).exists():
        return 0
    with db.database.atomic():
        return AuditEvent.delete().where(expired).execute()


def prune_or_warn(
    retention_days: int, now: datetime | None = None, patience_ms: int | None = None
) -> bool:
    """``prune``, as housekeeping: a failure is a warning, never the caller's problem (a
    start, a request), and the next prune deletes what this one left. ``patience_ms``
    bounds its wait for another writer's lock. Whether it pruned."""
    try:
        if patience_ms is None:
            pruned = prune(retention_days, now)
        else:
            with db.impatient(patience_ms):
                pruned = prune(retention_days, now)
    except PeeweeException as error:
        log.warning("could not prune the audit log: %s", str(error).partition("\n")[0])
        return False
    if pruned:
        log.info("pruned %d audit events past retention", pruned)
    return True


def prune_when_due(response: Response) -> Response:
    """An ``after_request`` hook: ``prune_or_warn`` an hour after the last prune of this
    process (or its start), never holding the request up behind another writer for long.

    Only after a request that authenticated: one that did not touches no database.
    """
    state = current_app.extensions["apikeys.audit"]
    now = utcnow()
    if g.get("principal") and now - state["pruned_at"] >= PRUNE_EVERY:
        state["pruned_at"] = now
        retention = current_app.config["AUDIT_RETENTION_DAYS"]
        if not prune_or_warn(retention, now, PRUNE_PATIENCE_MS):
            db.discard_connection()  # as after any database error in a request
    return response


def init_app(app: Flask) -> None:
    # The start prunes (startup.prepare): the first prune here is an hour later.
    app.extensions["apikeys.audit"] = {"pruned_at": utcnow()}
