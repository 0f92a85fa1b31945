"""PATCH /api/v1/org/api-keys/{key_id}: rename, replace scopes, change the expiry or the
rate limit; the next request sees the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apikeys.models import ApiKey
from tests.conftest import bearer
from tests.test_api_keys import (
    LEAKY_NAMES,
    LISTED_FIELDS,
    URL,
    audit_trail,
    error,
    listing,
    one,
    refuses_the_name,
    revoke,
    rfc3339,
)
from tests.test_store import all_at_once, call

pytestmark = pytest.mark.both_databases

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def patch(client, secret: str, key_id: str, body=None, **kwargs):
    if body is not None:
        kwargs["json"] = body
    return client.patch(f"{URL}/{key_id}", headers=bearer(secret), **kwargs)


def check(client, secret: str, scope: str) -> int:
    headers = {**bearer(secret), "X-Required-Scope": scope}
    return client.get("/api/v1/auth/check", headers=headers).status_code


def stored(key_id: str) -> dict:
    return ApiKey.select().where(ApiKey.id == key_id).dicts().get()


def test_rename_answers_the_key_object(client, admin, make_key):
    target = make_key(name="old")
    response = patch(client, admin.key, target.id, {"name": "  new  "})

    assert response.status_code == 200, response.json
    assert set(response.json) == LISTED_FIELDS
    assert response.json["name"] == "new"
    assert response.json["id"] == target.id
    assert one(client, admin.key, target.id).json == response.json
    assert check(client, target.key, "read:billing") == 200


def test_scopes_are_replaced_and_the_next_request_sees_them(client, admin, make_key):
    target = make_key(key_scopes=["read:billing", "read:sessions"])
    assert check(client, target.key, "read:billing") == 200

    response = patch(client, admin.key, target.id, {"scopes": ["read:analytics"] * 2})

    assert response.json["scopes"] == ["read:analytics"]
    assert check(client, target.key, "read:billing") == 403
    assert check(client, target.key, "read:analytics") == 200


def test_expiry_is_set_from_now_and_removed_with_null(client, admin, make_key):
    target = make_key(expires_in_days=1)
    with time_machine.travel(NOW, tick=False):
        response = patch(client, admin.key, target.id, {"expires_in_days": 30})
    assert response.json["expires_at"] == rfc3339(NOW + timedelta(days=30))

    response = patch(client, admin.key, target.id, {"expires_in_days": None})
    assert response.json["expires_at"] is None
    with time_machine.travel(datetime.now(UTC) + timedelta(days=4000)):
        assert check(client, target.key, "read:billing") == 200


def test_an_expired_key_can_be_given_a_new_expiry(client, admin, make_key):
    target = make_key(expires_in_days=1)
    later = datetime.now(UTC) + timedelta(days=2)
    with time_machine.travel(later, tick=False):
        assert check(client, target.key, "read:billing") == 401
        assert patch(client, admin.key, target.id, {"expires_in_days": 7}).status_code == 200
        assert check(client, target.key, "read:billing") == 200


def test_rate_limit_is_set_and_reset(client, admin, make_key):
    target = make_key()
    assert patch(client, admin.key, target.id, {"rate_limit": "5/minute"}).json["rate_limit"] == (
        "5/minute"
    )
    assert patch(client, admin.key, target.id, {"rate_limit": None}).json["rate_limit"] is None


def test_what_the_body_leaves_out_stays(client, admin, make_key):
    target = make_key(name="kept", key_scopes=["read:billing"], expires_in_days=5)
    before = stored(target.id)
    patch(client, admin.key, target.id, {"rate_limit": "5/minute"})
    after = stored(target.id)
    assert {**before, "rate_limit": "5/minute"} == after


def test_keeping_its_own_name_is_no_conflict(client, admin, make_key):
    target = make_key(name="same")
    assert patch(client, admin.key, target.id, {"name": "same"}).status_code == 200


def test_a_name_taken_by_another_live_key_is_refused(client, admin, make_key):
    make_key(name="taken")
    target = make_key(name="mine")
    error(patch(client, admin.key, target.id, {"name": "taken"}), 400, "name_taken")
    assert stored(target.id)["name"] == "mine"


def test_a_renamed_keys_old_name_is_free(client, admin, make_key):
    target = make_key(name="first")
    patch(client, admin.key, target.id, {"name": "second"})
    assert make_key(name="first").name == "first"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": None}, "name"),
        ({"scopes": []}, "scopes"),
        ({"scopes": "read:billing"}, "scopes"),
        ({"scopes": None}, "scopes"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": 3651}, "expires_in_days"),
        ({"expires_in_days": "30"}, "expires_in_days"),
        ({"expires_in_days": True}, "expires_in_days"),
        ({"rate_limit": "lots"}, "rate_limit"),
        ({"rate_limit": 10}, "rate_limit"),
        ({}, "body"),
        ({"key": "evk_x"}, "key"),
        ({"name": "ok", "revoked_at": None}, "revoked_at"),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(client, admin, make_key, body, field):
    target = make_key(name="target")
    before = stored(target.id)
    response = error(patch(client, admin.key, target.id, body), 400, "invalid_request")
    assert field in response["details"]
    assert stored(target.id) == before


@pytest.mark.parametrize("leaky", LEAKY_NAMES.values(), ids=LEAKY_NAMES.keys())
def test_a_name_holding_a_key_is_refused_and_nothing_changes(client, admin, make_key, leaky):
    target = make_key(name="target")
    before = stored(target.id)
    keys, events = listing(client, admin.key), audit_trail(client, admin.key)

    # The target's own secret, or another key's: neither may become a name.
    for secret in (target.key, admin.key):
        refuses_the_name(patch(client, admin.key, target.id, {"name": leaky(secret)}), secret)

    assert stored(target.id) == before
    assert listing(client, admin.key) == keys
    assert audit_trail(client, admin.key) == events


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("", "application/json"),
        ("null", "application/json"),
        ("[]", "application/json"),
        ('{"name": "x"}', "text/plain"),
        ("{", "application/json"),
    ],
)
def test_a_missing_or_malformed_body_is_400(client, admin, make_key, data, content_type):
    target = make_key(name="target")
    response = patch(client, admin.key, target.id, data=data, content_type=content_type)
    error(response, 400, "invalid_request")
    assert stored(target.id)["name"] == "target"


def test_unknown_scopes_are_named(client, admin, make_key):
    target = make_key()
    response = patch(client, admin.key, target.id, {"scopes": ["read:billing", "fly"]})
    assert "'fly'" in error(response, 400, "invalid_scope")["message"]


def test_scopes_never_go_beyond_the_callers(client, make_key):
    caller = make_key(key_scopes=["write:api_keys", "read:billing"])
    target = make_key(key_scopes=["read:billing"])
    response = patch(client, caller.key, target.id, {"scopes": ["read:billing", "read:sessions"]})
    assert "read:sessions" in error(response, 403, "forbidden")["message"]
    assert stored(target.id)["scopes"] == ("read:billing",)


def test_a_key_holding_more_than_the_caller_cannot_be_changed(client, make_key):
    caller = make_key(key_scopes=["write:api_keys"])
    stronger = make_key(name="stronger", key_scopes=["write:api_keys", "write:billing"])
    response = patch(client, caller.key, stronger.id, {"expires_in_days": None, "name": "x"})
    assert "write:billing" in error(response, 403, "forbidden")["message"]
    assert stored(stronger.id)["name"] == "stronger"
    # Taking the extra scope away is within the caller's power.
    assert patch(client, caller.key, stronger.id, {"scopes": ["write:api_keys"]}).status_code == (
        200
    )


def test_a_key_can_change_itself(client, admin):
    response = patch(client, admin.key, admin.id, {"name": "me"})
    assert response.json["name"] == "me"


@pytest.mark.parametrize("which", ["unknown", "revoked", "other organization's", "nul"])
def test_not_found_as_for_delete(client, admin, make_key, other_org, which):
    if which == "revoked":
        key_id = make_key().id
        revoke(client, admin.key, key_id)
    elif which == "other organization's":
        key_id = make_key(organization=other_org).id
    else:
        key_id = {"unknown": "key_unknown", "nul": "key_\x00"}[which]
    error(patch(client, admin.key, key_id, {"name": "found?"}), 404, "not_found")


def test_needs_write_api_keys(client, make_key):
    reader = make_key(key_scopes=["read:api_keys"])
    target = make_key()
    error(patch(client, reader.key, target.id, {"name": "x"}), 403, "forbidden")
    response = client.patch(f"{URL}/{target.id}", json={"name": "x"})
    error(response, 401, "unauthorized")


def test_concurrent_renames_of_different_keys_to_one_name_give_one_success(
    server, admin, make_key, org
):
    targets = [make_key(name=f"k{i}") for i in range(20)]
    results = all_at_once(
        20,
        lambda i: call(server, "PATCH", f"{URL}/{targets[i].id}", bearer(admin.key), {"name": "x"}),
    )

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [400] * 19, results
    assert {body["error"]["code"] for status, body in results if status == 400} == {"name_taken"}
    assert [key.name for key in ApiKey.live(org.id) if key.name == "x"] == ["x"]
