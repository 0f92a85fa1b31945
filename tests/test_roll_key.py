"""POST /api/v1/org/api-keys/{key_id}/roll: a new secret for the same key, the old one
valid through a grace period and never after; revoking ends both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from peewee import PostgresqlDatabase

from apikeys import crypto, db, service, startup
from apikeys.models import ApiKey, lookup_sql
from tests.conftest import bearer
from tests.test_api_keys import LISTED_FIELDS, URL, error, one, revoke, rfc3339
from tests.test_store import all_at_once, call

pytestmark = pytest.mark.both_databases

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
ROLLED_FIELDS = LISTED_FIELDS | {"key"}


def roll(client, secret: str, key_id: str, body=None, **kwargs):
    if body is not None:
        kwargs["json"] = body
    return client.post(f"{URL}/{key_id}/roll", headers=bearer(secret), **kwargs)


def check(client, secret: str, scope: str = "read:billing") -> int:
    headers = {**bearer(secret), "X-Required-Scope": scope}
    return client.get("/api/v1/auth/check", headers=headers).status_code


def stored(key_id: str) -> dict:
    return ApiKey.select().where(ApiKey.id == key_id).dicts().get()


def test_roll_without_grace_ends_the_old_secret_now(client, admin, make_key):
    target = make_key(name="ci", key_scopes=["read:billing"], expires_in_days=30)
    before = one(client, admin.key, target.id).json
    with time_machine.travel(NOW, tick=False):
        response = roll(client, admin.key, target.id)

    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    rolled = response.json
    assert set(rolled) == ROLLED_FIELDS
    assert rolled["previous_key_expires_at"] == rfc3339(NOW)
    assert crypto.is_well_formed(rolled["key"]) and rolled["key"] != target.key
    # Same id, name, scopes, expiry and limit; a new hint.
    same = ("id", "name", "scopes", "created_at", "expires_at", "rate_limit")
    assert {field: rolled[field] for field in same} == {field: before[field] for field in same}
    assert rolled["key_hint"] == "evk_..." + rolled["key"][-4:]

    assert check(client, target.key) == 401
    assert check(client, rolled["key"]) == 200
    assert one(client, admin.key, target.id).json["previous_key_expires_at"] is None


def test_the_old_secret_works_through_the_grace_period_and_never_after(client, admin, make_key):
    target = make_key()
    with time_machine.travel(NOW, tick=False):
        rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 3600}).json
        until = rfc3339(NOW + timedelta(hours=1))
        assert rolled["previous_key_expires_at"] == until
        assert one(client, admin.key, target.id).json["previous_key_expires_at"] == until
    with time_machine.travel(NOW + timedelta(seconds=3599), tick=False):
        assert check(client, target.key) == 200
        assert check(client, rolled["key"]) == 200
        # The old secret acts as the same key.
        assert client.get(URL, headers=bearer(target.key)).status_code == 200
    with time_machine.travel(NOW + timedelta(seconds=3600), tick=False):
        assert check(client, target.key) == 401
        assert check(client, rolled["key"]) == 200
        assert one(client, rolled["key"], target.id).json["previous_key_expires_at"] is None


def test_the_check_names_the_same_key_for_either_secret(client, admin, make_key):
    target = make_key()
    rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 60}).json
    for secret in (target.key, rolled["key"]):
        headers = {**bearer(secret), "X-Required-Scope": "read:billing"}
        answer = client.get("/api/v1/auth/check", headers=headers)
        assert answer.headers["X-Auth-Key-Id"] == target.id


def test_revoking_ends_both_secrets_at_once(client, admin, make_key):
    target = make_key()
    rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 3600}).json
    assert revoke(client, admin.key, target.id).status_code == 204
    assert check(client, target.key) == 401
    assert check(client, rolled["key"]) == 401


def test_a_second_roll_keeps_only_the_newest_previous_secret(client, admin, make_key):
    target = make_key()
    first = roll(client, admin.key, target.id, {"grace_period_seconds": 3600}).json
    second = roll(client, admin.key, target.id, {"grace_period_seconds": 600}).json

    assert check(client, target.key) == 401  # the first previous secret: gone
    assert check(client, first["key"]) == 200  # the newest previous one, in its grace
    assert check(client, second["key"]) == 200
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=601)):
        assert check(client, first["key"]) == 401


def test_only_hashes_are_stored(client, admin, make_key):
    target = make_key()
    rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 60}).json
    row = stored(target.id)
    assert row["key_hash"] == crypto.hash_secret(rolled["key"])
    assert row["previous_key_hash"] == crypto.hash_secret(target.key)
    values = [str(value) for row in ApiKey.select().tuples() for value in row]
    for secret in (target.key, rolled["key"]):
        assert not any(secret in value or secret[4:-4] in value for value in values)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"grace_period_seconds": -1}, "grace_period_seconds"),
        ({"grace_period_seconds": 604_801}, "grace_period_seconds"),
        ({"grace_period_seconds": "60"}, "grace_period_seconds"),
        ({"grace_period_seconds": 1.5}, "grace_period_seconds"),
        ({"grace_period_seconds": True}, "grace_period_seconds"),
        ({"grace_period_seconds": None}, "grace_period_seconds"),
        ({"grace": 60}, "grace"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(client, admin, make_key, body, field):
    target = make_key()
    before = stored(target.id)
    response = error(roll(client, admin.key, target.id, body), 400, "invalid_request")
    assert field in response["details"]
    assert stored(target.id) == before
    assert check(client, target.key) == 200


def test_the_longest_grace_is_seven_days(client, admin, make_key):
    target = make_key()
    with time_machine.travel(NOW, tick=False):
        rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 604_800}).json
    assert rolled["previous_key_expires_at"] == rfc3339(NOW + timedelta(days=7))


def test_a_grace_ends_with_the_key_when_the_key_expires_first(client, admin, make_key):
    with time_machine.travel(NOW, tick=False):
        target = make_key(expires_in_days=1)
        rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 604_800}).json
    assert rolled["previous_key_expires_at"] == rolled["expires_at"]
    assert rolled["expires_at"] == rfc3339(NOW + timedelta(days=1))
    assert one(client, admin.key, target.id).json["previous_key_expires_at"] is not None


def test_a_grace_ends_with_the_key_when_a_later_change_makes_it_expire_first(
    client, admin, make_key
):
    target = make_key()
    with time_machine.travel(NOW, tick=False):
        rolled = roll(client, admin.key, target.id, {"grace_period_seconds": 604_800}).json
        patch = {"expires_in_days": 1}
        changed = client.patch(f"{URL}/{target.id}", headers=bearer(admin.key), json=patch).json
    assert changed["expires_at"] == rfc3339(NOW + timedelta(days=1))
    assert changed["previous_key_expires_at"] == changed["expires_at"]
    assert (
        one(client, admin.key, target.id).json["previous_key_expires_at"] == changed["expires_at"]
    )
    with time_machine.travel(NOW + timedelta(days=2), tick=False):  # made never to expire again
        renewed = client.patch(
            f"{URL}/{target.id}", headers=bearer(admin.key), json={"expires_in_days": None}
        )
        assert renewed.status_code == 200
        assert check(client, rolled["key"]) == 200
        assert check(client, target.key) == 401


def test_an_empty_object_is_no_grace(client, admin, make_key):
    target = make_key()
    assert roll(client, admin.key, target.id, {}).status_code == 200
    assert check(client, target.key) == 401


@pytest.mark.parametrize("which", ["unknown", "revoked", "other organization's"])
def test_not_found_as_for_delete(client, admin, make_key, other_org, which):
    if which == "revoked":
        key_id = make_key().id
        revoke(client, admin.key, key_id)
    elif which == "other organization's":
        key_id = make_key(organization=other_org).id
    else:
        key_id = "key_unknown"
    error(roll(client, admin.key, key_id), 404, "not_found")


def test_a_key_holding_more_than_the_caller_cannot_be_rolled(client, make_key):
    # Rolling hands out the key's new secret: the caller would gain the key's scopes.
    caller = make_key(key_scopes=["write:api_keys"])
    stronger = make_key(key_scopes=["write:api_keys", "write:billing"])
    before = stored(stronger.id)
    response = roll(client, caller.key, stronger.id)
    assert "write:billing" in error(response, 403, "forbidden")["message"]
    assert stored(stronger.id) == before


def test_needs_write_api_keys(client, make_key):
    reader = make_key(key_scopes=["read:api_keys"])
    target = make_key()
    error(roll(client, reader.key, target.id), 403, "forbidden")
    error(client.post(f"{URL}/{target.id}/roll"), 401, "unauthorized")
    assert check(client, target.key) == 200


def test_a_key_can_roll_itself_and_keep_working_through_the_grace(client, admin):
    rolled = roll(client, admin.key, admin.id, {"grace_period_seconds": 60}).json
    assert check(client, admin.key) == 200
    assert check(client, rolled["key"]) == 200


def test_a_previous_secret_cannot_roll_its_key_and_end_the_one_its_owner_rolled_for(
    client, admin, make_key
):
    # A leaked secret, rolled away with a grace period so that the integration can move.
    leaked = make_key(key_scopes=["write:api_keys", "read:billing"])
    rolled = roll(client, admin.key, leaked.id, {"grace_period_seconds": 3600}).json

    refused = roll(client, leaked.key, leaked.id, {"grace_period_seconds": 0})

    error(refused, 403, "forbidden")
    assert "previous secret" in refused.json["error"]["message"]
    assert check(client, rolled["key"]) == 200  # the owner's new secret still works
    assert stored(leaked.id)["key_hash"] == crypto.hash_secret(rolled["key"])
    # Its current secret may roll it, and the previous one still acts as the key elsewhere.
    other = make_key(key_scopes=["read:billing"])
    assert roll(client, leaked.key, other.id).status_code == 200
    assert roll(client, rolled["key"], leaked.id).status_code == 200


def test_a_rolled_bootstrap_secret_is_never_seeded_again(app, settings, client):
    secret = crypto.generate_secret()
    service.bootstrap(secret, "default")
    seeded = ApiKey.get(ApiKey.key_hash == crypto.hash_secret(secret))
    rolled = roll(client, secret, seeded.id).json
    assert check(client, secret) == 401

    # A restart with the same APIKEYS_BOOTSTRAP_KEY in the environment.
    startup.prepare({**app.config, "APIKEYS_BOOTSTRAP_KEY": secret})

    assert check(client, secret) == 401
    assert check(client, rolled["key"]) == 200
    assert ApiKey.select().where(ApiKey.revoked_at.is_null()).count() == 1


def test_a_roll_racing_a_revoke_never_leaves_a_secret_working(server, admin, make_key):
    for _ in range(10):
        target = make_key()
        path = f"{URL}/{target.id}"
        rolled, revoked = all_at_once(
            2,
            lambda i, path=path: (
                call(
                    server, "POST", f"{path}/roll", bearer(admin.key), {"grace_period_seconds": 600}
                )
                if i == 0
                else call(server, "DELETE", path, bearer(admin.key))
            ),
        )
        assert revoked[0] == 204
        assert rolled[0] in (200, 404), rolled
        secrets = [target.key] + ([rolled[1]["key"]] if rolled[0] == 200 else [])
        for secret in secrets:
            headers = {**bearer(secret), "X-Required-Scope": "read:billing"}
            assert call(server, "GET", "/api/v1/auth/check", headers)[0] == 401


def test_the_lookup_uses_both_indexes_not_a_scan(app, org, make_key):
    # Enough keys that a planner would rather use an index than read the table.
    rows = [
        {
            "id": f"key_{i:06d}",
            "organization": org.id,
            "name": f"bulk-{i}",
            "key_hash": crypto.hash_secret(f"secret-{i}"),
            "previous_key_hash": crypto.hash_secret(f"previous-{i}"),
            "key_hint": "evk_...0000",
            "scopes": ("read:billing",),
        }
        for i in range(5000)
    ]
    with db.database.atomic():
        ApiKey.insert_many(rows).execute()
    opened = db.database.obj
    sql = lookup_sql(type(opened))
    if isinstance(opened, PostgresqlDatabase):
        opened.execute_sql("ANALYZE api_key")
        # The plan for these values, and the generic one a prepared statement may settle on.
        for mode in ("force_custom_plan", "force_generic_plan"):
            with db.database.atomic():
                opened.execute_sql(f"SET LOCAL plan_cache_mode = {mode}")
                explained = opened.execute_sql("EXPLAIN " + sql, ("a" * 64, "a" * 64))
                plan = "\n".join(line for (line,) in explained)
            assert "Seq Scan" not in plan, plan
            assert "Index Cond: ((key_hash)" in plan, plan
            assert "Index Cond: ((previous_key_hash)" in plan, plan
    else:
        plan = "\n".join(
            str(row[-1])
            for row in opened.execute_sql("EXPLAIN QUERY PLAN " + sql, ("a" * 64, "a" * 64))
        )
        assert "SCAN" not in plan, plan
        assert "USING INDEX apikey_key_hash (key_hash=?)" in plan, plan
        assert "USING INDEX api_key_previous_key_hash (previous_key_hash=?)" in plan, plan
