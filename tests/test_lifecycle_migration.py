"""Migration 0003 (the key lifecycle) on a database that already holds keys."""

from __future__ import annotations

import pytest
from playhouse.migrations import Runner

from apikeys import crypto, db, scopes, service
from apikeys.models import ApiKey, Organization, utcnow
from apikeys.verification import verify
from app import create_app
from tests.conftest import prepared

pytestmark = pytest.mark.both_databases


def _key_at_0002(organization_id: str, name: str, revoked: bool = False) -> tuple[str, str]:
    """A key written with the columns 0002 knows, and no others: (id, secret)."""
    secret = crypto.generate_secret()
    key_id = crypto.new_id("key")
    ApiKey.insert(
        id=key_id,
        organization=organization_id,
        name=name,
        key_hash=crypto.hash_secret(secret),
        key_hint=crypto.hint(secret),
        scopes=scopes.SCOPES,
        created_at=utcnow(),
        revoked_at=utcnow() if revoked else None,
    ).execute()
    return key_id, secret


def test_keys_made_before_0003_keep_working_and_gain_the_lifecycle(database_url):
    db.init(database_url)
    with db.database.connection_context():
        Runner(db.database.obj, directory=str(db.MIGRATIONS)).up(target="0002_readiness_probe")
        org = Organization.create(name="acme")
        live_id, live = _key_at_0002(org.id, "live")
        _, revoked = _key_at_0002(org.id, "revoked", revoked=True)

    prepared(create_app({"TESTING": True, "DATABASE_URL": database_url}))

    assert "0003_key_lifecycle" in db.applied_migrations()
    principal = verify(live, last_used_interval=60)
    assert principal is not None and principal.key_id == live_id
    assert principal.rate_limit is None
    assert verify(revoked, last_used_interval=60) is None
    row = ApiKey.get_by_id(live_id)
    assert (row.previous_key_hash, row.previous_key_expires_at, row.rate_limit) == (None,) * 3

    # Every new operation works on the old key.
    service.set_policy(org.id, max_expires_in_days=30)
    service.update_key(
        org.id,
        live_id,
        {"expires_in_days": 30, "rate_limit": "5/minute"},
        rate_limit_cap="1000/minute",
    )
    rolled = service.roll_key(org.id, live_id, 60)
    assert verify(live, last_used_interval=60).key_id == live_id  # in its grace period
    assert verify(rolled.key, last_used_interval=60).rate_limit == "5/minute"
    db.close_all()
