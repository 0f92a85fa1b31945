"""Cursor pagination of GET /api/v1/org/api-keys (SPEC 11.3): stable under creates and
revokes between pages and while keys are being created, and no cursor it did not give."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
import time_machine

from apikeys import service
from tests.conftest import bearer
from tests.servers import send

pytestmark = pytest.mark.both_databases

URL = "/api/v1/org/api-keys"


def page(client, secret: str, **query) -> dict:
    path = URL + ("?" + "&".join(f"{k}={quote(str(v))}" for k, v in query.items()) if query else "")
    response = client.get(path, headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert set(response.json) == {"data", "total", "has_more", "next_cursor"}
    return response.json


def walk(client, secret: str, limit: int, between=None) -> list[dict]:
    """Every page, in order; ``between(number)`` runs after each page but the last."""
    pages, cursor = [], None
    while True:
        body = page(client, secret, limit=limit, **({"after": cursor} if cursor else {}))
        pages.append(body)
        assert len(body["data"]) <= limit
        assert body["has_more"] == (body["next_cursor"] is not None)
        if not body["has_more"]:
            return pages
        cursor = body["next_cursor"]
        if between:
            between(len(pages))


def ids(pages: list[dict]) -> list[str]:
    return [key["id"] for body in pages for key in body["data"]]


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_without_limit_every_key_on_one_page(client, admin, make_key):
    for number in range(4):
        make_key(name=f"k{number}")

    body = page(client, admin.key)

    assert [key["name"] for key in body["data"]] == ["k3", "k2", "k1", "k0", "admin"]
    assert body == {**body, "total": 5, "has_more": False, "next_cursor": None}


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 1000])
def test_pages_cover_the_full_list_in_order_with_total_on_each(client, admin, make_key, limit):
    for number in range(6):
        make_key(name=f"k{number}")
    everything = [key["id"] for key in page(client, admin.key)["data"]]

    pages = walk(client, admin.key, limit)

    assert ids(pages) == everything
    assert all(body["total"] == 7 for body in pages)
    assert pages[-1]["next_cursor"] is None
    assert len(pages) == -(-7 // limit)


def test_keys_made_in_the_same_instant_are_neither_repeated_nor_skipped(client, make_key):
    # Ties on created_at are broken by id: a cursor names a position, not a time.
    with time_machine.travel(datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC), tick=False):
        made = [make_key(name=f"same-{number}") for number in range(9)]

    pages = walk(client, made[0].key, 2)

    assert sorted(ids(pages)) == sorted(key.id for key in made)
    assert len(ids(pages)) == 9


def test_creates_and_revokes_between_pages_neither_repeat_nor_skip_a_key(client, admin, make_key):
    before = [make_key(name=f"old-{number}") for number in range(10)]
    shown, created, revoked_unseen, cursor = [], [], [], None
    while True:
        body = page(client, admin.key, limit=3, **({"after": cursor} if cursor else {}))
        shown += [key["id"] for key in body["data"]]
        if not body["has_more"]:
            break
        cursor = body["next_cursor"]
        # Between pages: a new key, the revocation of the key the cursor came from, and of
        # the oldest key not shown yet.
        created.append(make_key(name=f"new-{len(created)}").id)
        service.revoke_key(admin.organization_id, body["data"][-1]["id"])
        unseen = [key.id for key in before if key.id not in shown + revoked_unseen]
        if unseen:
            service.revoke_key(admin.organization_id, unseen[0])
            revoked_unseen.append(unseen[0])

    assert len(shown) == len(set(shown)), "a key was shown twice"
    stayed = {key.id for key in before if key.id not in revoked_unseen} | {admin.id}
    assert stayed <= set(shown), "a key there throughout was skipped"
    assert not set(revoked_unseen) & set(shown)
    # Newest first: a key made after a page sorts before the cursor, so it is not shown.
    assert not set(created) & set(shown)
    assert revoked_unseen and created


def test_pagination_while_keys_are_being_created_shows_no_key_twice(server, admin, make_key):
    before = {make_key(name=f"old-{number}").id for number in range(12)} | {admin.id}
    creating = threading.Event()
    failures = []

    def creator(number: int) -> None:
        creating.set()
        for each in range(15):
            body = json.dumps({"name": f"new-{number}-{each}", "scopes": ["read:billing"]})
            answer = send(
                server,
                "POST",
                URL,
                {**bearer(admin.key), "Content-Type": "application/json"},
                body.encode(),
            )
            if answer.status != 201:
                failures.append(answer.body)

    creators = [threading.Thread(target=creator, args=(number,)) for number in range(4)]
    for thread in creators:
        thread.start()
    creating.wait(10)
    walks = []
    while any(thread.is_alive() for thread in creators) or not walks:
        shown, cursor = [], None
        while True:
            query = f"?limit=2&after={cursor}" if cursor else "?limit=2"
            answer = send(server, "GET", URL + query, bearer(admin.key))
            assert answer.status == 200, answer.body
            body = answer.json()
            shown += [key["id"] for key in body["data"]]
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
        walks.append(shown)
    for thread in creators:
        thread.join(timeout=60)

    assert not failures
    assert len(walks) > 1  # some walks ran while keys were being created
    for shown in walks:
        assert len(shown) == len(set(shown)), "a key was shown twice"
        assert before <= set(shown), "a key there throughout was skipped"


# --- what is refused ----------------------------------------------------------------------

_VALID_TIME = "2031-01-02T03:04:05.000006"
BAD_CURSORS = {
    "garbage": "not a cursor!",
    "base64 of nothing JSON": base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    "base64 of text": base64.urlsafe_b64encode(b"hello world").decode(),
    "padding only": "====",
    "one character": "A",
    "a number": cursor_of(12),
    "an object": cursor_of({"time": _VALID_TIME, "id": "key_abc"}),
    "an object of two keys": cursor_of({_VALID_TIME: 1, "key_abc": 2}),
    "too short": cursor_of([_VALID_TIME]),
    "too long": cursor_of([_VALID_TIME, "key_abc", "key_def"]),
    "numbers": cursor_of([1, 2]),
    "null time": cursor_of([None, "key_abc"]),
    "not a time": cursor_of(["yesterday", "key_abc"]),
    "a time with a zone": cursor_of(["2031-01-02T03:04:05+00:00", "key_abc"]),
    "an id with a space": cursor_of([_VALID_TIME, "key abc"]),
    "an id with a quote": cursor_of([_VALID_TIME, "key_'--"]),
    "a NUL in the id": cursor_of([_VALID_TIME, "key_\u0000"]),
    "a list id": cursor_of([_VALID_TIME, ["key_abc"]]),
    "deeply nested": cursor_of([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
    "huge": "A" * 100_000,
    "huge but valid base64": cursor_of(["2031-01-02T03:04:05", "k" * 5000]),
    "non-ASCII": "curs\u00e9or",
    "non-ASCII in the JSON": cursor_of([_VALID_TIME, "key_\u00e9"]),
    "a line separator": "abc\u2028def",
    "a NUL": "abc\x00def",
    "empty": "",
    "a year out of range": cursor_of(["99999-01-01T00:00:00", "key_abc"]),
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_cursor_the_listing_did_not_give_is_400(client, admin, cursor):
    response = client.get(f"{URL}?limit=2&after={quote(cursor)}", headers=bearer(admin.key))

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_request"
    assert "after" in response.json["error"]["details"]


#: What int() takes but a query string's limit may not be: anything but ASCII digits.
LENIENT_LIMITS = ["\uff15", "\u0665", "1_0", "+5", " 5", "5 ", "\t5", "5\n", "0x10"]


@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "abc", "1.5", "", "1e3", "9" * 5000, *LENIENT_LIMITS]
)
def test_a_limit_outside_1_to_1000_is_400(client, admin, limit):
    response = client.get(f"{URL}?limit={quote(limit)}", headers=bearer(admin.key))

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_request"
    assert "limit" in response.json["error"]["details"]


@pytest.mark.parametrize("url", [URL, "/api/v1/org/audit-events"])
@pytest.mark.parametrize(
    ("query", "named"),
    [("limit=1&limit=2", "limit"), ("limit=1&limit=x", "limit"), ("after=a&after=b", "after")],
)
def test_a_parameter_given_twice_is_400(client, admin, url, query, named):
    response = client.get(f"{url}?{query}", headers=bearer(admin.key))

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_request"
    assert list(response.json["error"]["details"]) == [named]


def test_a_parameter_the_listing_does_not_read_may_repeat(client, admin):
    response = client.get(f"{URL}?limit=1&x=1&x=2", headers=bearer(admin.key))
    assert response.status_code == 200, response.get_data(as_text=True)


def refused(client, secret: str, cursor: str, url: str = URL) -> None:
    response = client.get(f"{url}?limit=2&after={quote(cursor)}", headers=bearer(secret))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert set(response.json) == {"error"}
    assert response.json["error"]["code"] == "invalid_request"
    assert "cursor" in response.json["error"]["message"]
    assert "after" in response.json["error"]["details"]


def parts(cursor: str) -> list:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


def issued(client, secret: str, url: str = URL) -> str:
    response = client.get(f"{url}?limit=1", headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["next_cursor"], response.json
    return response.json["next_cursor"]


@pytest.mark.parametrize(
    "time",
    [
        "2026-12-03",
        "2026-12-03 17:18:34",
        "2026-12-03T17:18:34",
        "2026-12-03T17:18:34.123",
        "2026-12-03 17:18:34.123456",
        "2026-12-03T17:18:34.123456Z",
        "20261203T171834.123456",
        "9999-12-31T23:59:59.999999",
    ],
)
def test_a_cursor_with_a_time_or_id_the_service_did_not_write_is_400(client, admin, make_key, time):
    make_key(name="second")
    _, key_id, *rest = parts(issued(client, admin.key))

    refused(client, admin.key, cursor_of([time, "key_x"]))
    refused(client, admin.key, cursor_of([time, key_id]))  # the form cursors had before
    refused(client, admin.key, cursor_of([time, key_id, *rest]))


def test_an_issued_cursor_changed_in_any_part_is_400(client, admin, make_key):
    for number in range(3):
        make_key(name=f"k{number}")
    cursor = issued(client, admin.key)
    time, key_id, *rest = parts(cursor)
    another = page(client, admin.key)["data"][-1]["id"]
    later = time[:-1] + ("1" if time[-1] != "1" else "2")
    evt = "evt_" + key_id[len("key_") :]

    for changed in (
        [later, key_id, *rest],
        [time, another, *rest],
        [time, evt, *rest],
        [time, key_id + "A", *rest],
        [time, key_id],
        [time, key_id, *rest, "more"],
    ):
        refused(client, admin.key, cursor_of(changed))
    refused(client, admin.key, cursor + "=" * (-len(cursor) % 4 or 4))
    refused(client, admin.key, cursor_of(parts(cursor)))  # JSON written with spaces
    # What was changed back is the cursor the service gave, and it works.
    assert page(client, admin.key, limit=1, after=cursor)["data"]


def test_a_cursor_of_another_organization_is_400(client, admin, make_key, other_org):
    make_key(name="second")
    theirs = [make_key(name=f"theirs-{number}", organization=other_org) for number in range(3)]
    their_cursor = issued(client, theirs[0].key)

    refused(client, admin.key, their_cursor)
    # The same cursor in its own organization goes on as before.
    assert page(client, theirs[0].key, limit=1, after=their_cursor)["data"]


def test_a_cursor_of_the_audit_log_is_400_here_and_the_other_way_round(client, admin, make_key):
    for number in range(3):
        make_key(name=f"k{number}")
    events = "/api/v1/org/audit-events"

    refused(client, admin.key, issued(client, admin.key, events))
    refused(client, admin.key, issued(client, admin.key), events)


def test_a_cursor_is_no_use_without_the_scope_or_a_key(client, make_key):
    reader = make_key(key_scopes=["read:billing"])

    assert client.get(f"{URL}?after=garbage").status_code == 401
    assert client.get(f"{URL}?after=garbage", headers=bearer(reader.key)).status_code == 403
