"""Organization policies (SPEC 11.6): a maximum lifetime and "expiry required", set by
`flask --app app orgs policy`, checked when a key is created, updated or rolled."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apikeys.audit import AuditEvent
from apikeys.models import ApiKey
from tests.conftest import bearer
from tests.test_api_keys import URL, create, error
from tests.test_cli import assert_clean_failure

pytestmark = pytest.mark.both_databases

DEFAULT = {"max_expires_in_days": None, "require_expiry": False}


def policy(cli, *args: str) -> dict:
    result = cli("orgs", "policy", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def body(**fields) -> dict:
    return {"name": "n", "scopes": ["read:billing"], **fields}


def violation(response, rule: str) -> str:
    """The refusal's message, which names the rule."""
    refusal = error(response, 400, "policy_violation")
    assert rule in refusal["message"]
    assert refusal["details"]["rule"] == rule
    return refusal["message"]


def patch(client, secret: str, key_id: str, changes: dict):
    return client.patch(f"{URL}/{key_id}", headers=bearer(secret), json=changes)


def roll(client, secret: str, key_id: str):
    return client.post(f"{URL}/{key_id}/roll", headers=bearer(secret))


def test_the_command_shows_and_sets_the_policy(cli, org):
    assert policy(cli, "acme") == {"org_id": org.id, **DEFAULT}
    assert policy(cli, org.id, "--max-expires-in-days", "90") == {
        "org_id": org.id,
        "max_expires_in_days": 90,
        "require_expiry": False,
    }
    # One rule at a time: the other stays.
    assert policy(cli, "acme", "--require-expiry")["max_expires_in_days"] == 90
    assert policy(cli, "acme") == {
        "org_id": org.id,
        "max_expires_in_days": 90,
        "require_expiry": True,
    }
    assert policy(cli, "acme", "--max-expires-in-days", "none", "--no-require-expiry") == {
        "org_id": org.id,
        **DEFAULT,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody",), "No organization with id or name 'nobody'"),
        (("acme", "--max-expires-in-days", "0"), "--max-expires-in-days"),
        (("acme", "--max-expires-in-days", "3651"), "--max-expires-in-days"),
        (("acme", "--max-expires-in-days", "soon"), "--max-expires-in-days"),
    ],
)
def test_mistakes_fail_cleanly(cli, org, args, message):
    assert_clean_failure(cli("orgs", "policy", *args), message)
    assert policy(cli, "acme") == {"org_id": org.id, **DEFAULT}


def test_require_expiry_on_create(cli, client, admin):
    policy(cli, "acme", "--require-expiry")
    violation(create(client, admin.key, body()), "require_expiry")
    violation(create(client, admin.key, body(expires_in_days=None)), "require_expiry")
    assert not ApiKey.select().where(ApiKey.name == "n").exists()
    assert create(client, admin.key, body(expires_in_days=3650)).status_code == 201


def test_max_expires_in_days_on_create(cli, client, admin):
    policy(cli, "acme", "--max-expires-in-days", "30")
    violation(create(client, admin.key, body(expires_in_days=31)), "max_expires_in_days")
    # A maximum lifetime implies an expiry.
    violation(create(client, admin.key, body()), "max_expires_in_days")
    assert not ApiKey.select().where(ApiKey.name == "n").exists()
    assert create(client, admin.key, body(expires_in_days=30)).status_code == 201


def test_another_organization_is_not_bound(cli, client, other_org, make_key):
    policy(cli, "acme", "--require-expiry")
    theirs = make_key(organization=other_org)
    assert create(client, theirs.key, body()).status_code == 201


def test_patch_may_not_set_an_expiry_that_breaks_the_policy(cli, client, admin, make_key):
    target = make_key(name="target", expires_in_days=10)
    policy(cli, "acme", "--max-expires-in-days", "30")
    violation(patch(client, admin.key, target.id, {"expires_in_days": 31}), "max_expires_in_days")
    violation(patch(client, admin.key, target.id, {"expires_in_days": None}), "max_expires_in_days")
    assert ApiKey.get_by_id(target.id).expires_at == target.expires_at
    assert patch(client, admin.key, target.id, {"expires_in_days": 30}).status_code == 200


def test_patch_of_other_fields_leaves_a_key_made_before_the_policy_alone(
    cli, client, admin, make_key
):
    target = make_key(name="old")
    policy(cli, "acme", "--require-expiry")
    response = patch(client, admin.key, target.id, {"name": "renamed", "scopes": ["read:billing"]})
    assert response.status_code == 200
    assert response.json["expires_at"] is None


def test_patch_giving_a_key_made_before_the_policy_its_own_expiry_again_is_no_change(
    cli, client, admin, make_key
):
    """What a client read, sent back (read, modify, write): the key never expired."""
    target = make_key(name="old")
    policy(cli, "acme", "--require-expiry")
    events = AuditEvent.select().count()
    response = patch(client, admin.key, target.id, {"name": "old", "expires_in_days": None})
    assert response.status_code == 200, response.json
    assert response.json["expires_at"] is None
    assert AuditEvent.select().count() == events


def test_roll_of_a_key_whose_expiry_breaks_a_later_policy_is_refused(cli, client, admin, make_key):
    target = make_key(name="old", expires_in_days=365)
    policy(cli, "acme", "--max-expires-in-days", "90")
    before = ApiKey.get_by_id(target.id).key_hash
    violation(roll(client, admin.key, target.id), "max_expires_in_days")
    assert ApiKey.get_by_id(target.id).key_hash == before
    # Brought into line first, it rolls.
    assert patch(client, admin.key, target.id, {"expires_in_days": 90}).status_code == 200
    assert roll(client, admin.key, target.id).status_code == 200


def test_roll_measures_the_lifetime_left_from_now(cli, client, admin, make_key):
    now = datetime.now(UTC)
    with time_machine.travel(now, tick=False):
        target = make_key(expires_in_days=100)
    policy(cli, "acme", "--max-expires-in-days", "90")
    with time_machine.travel(now + timedelta(days=9), tick=False):
        violation(roll(client, admin.key, target.id), "max_expires_in_days")
    with time_machine.travel(now + timedelta(days=10), tick=False):
        assert roll(client, admin.key, target.id).status_code == 200


def test_require_expiry_on_roll(cli, client, admin, make_key):
    target = make_key()
    policy(cli, "acme", "--require-expiry")
    violation(roll(client, admin.key, target.id), "require_expiry")


def test_a_refused_roll_says_to_patch_the_expiry_first(cli, client, admin, make_key):
    # A roll takes no expiry: the remedy is a PATCH of the key's, not expires_in_days here.
    forever = make_key(name="forever")
    long_lived = make_key(name="long-lived", expires_in_days=365)
    policy(cli, "acme", "--require-expiry", "--max-expires-in-days", "90")

    message = violation(roll(client, admin.key, forever.id), "require_expiry")
    assert "this key never expires" in message
    assert "PATCH it with expires_in_days" in message and "then roll it" in message
    message = violation(roll(client, admin.key, long_lived.id), "max_expires_in_days")
    assert "this key expires later" in message
    assert "PATCH it with expires_in_days of 90 or less" in message and "then roll it" in message
    # A create or PATCH gives the expiry itself, and is told so.
    for refused in (
        create(client, admin.key, body()),
        patch(client, admin.key, long_lived.id, {"expires_in_days": 91}),
    ):
        assert "PATCH" not in refused.json["error"]["message"]
        assert "give expires_in_days" in refused.json["error"]["message"]


def test_keys_create_in_the_cli_meets_the_policy(cli, org):
    policy(cli, "acme", "--require-expiry")
    args = ("keys", "create", "--org", "acme", "--name", "x", "--scope", "read:billing")
    assert_clean_failure(cli(*args), "require_expiry")
    assert cli(*args, "--expires-in-days", "5").exit_code == 0
