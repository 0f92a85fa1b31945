"""The audit log (SPEC 11.5): one event per change, from the API, the CLI and the bootstrap,
in the change's own transaction; listed newest first to its organization alone; never a
secret; pruned past AUDIT_RETENTION_DAYS."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import time_machine
from peewee import PeeweeException, PostgresqlDatabase

from apikeys import audit, crypto, db, scopes, service
from apikeys.audit import AuditEvent
from apikeys.config import ConfigError
from apikeys.models import ApiKey
from apikeys.verification import verify
from app import create_app
from tests.conftest import bearer, prepared

pytestmark = pytest.mark.both_databases

KEYS = "/api/v1/org/api-keys"
EVENTS = "/api/v1/org/audit-events"
RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
EVENT_FIELDS = {
    "id",
    "time",
    "action",
    "actor",
    "target",
    "changes",
    "request_id",
    "client_addr",
    "user_agent",
}


def listed(client, secret: str, query: str = "") -> dict:
    response = client.get(EVENTS + query, headers=bearer(secret))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert set(response.json) == {"data", "total", "has_more", "next_cursor"}
    return response.json


def create(client, secret: str, name: str, **headers):
    body = {"name": name, "scopes": ["read:billing"]}
    return client.post(KEYS, headers={**bearer(secret), **headers}, json=body)


# --- what an event says -------------------------------------------------------------------


def test_an_api_create_and_revoke_record_who_did_it_from_where(client, admin):
    headers = {"X-Request-ID": "req-create-1", "User-Agent": "integration/1.0"}
    created = create(client, admin.key, "ci", **headers).json
    revoked = client.delete(
        f"{KEYS}/{created['id']}",
        headers={**bearer(admin.key), "X-Request-ID": "req-revoke-1", "User-Agent": "ops/2"},
    )
    assert revoked.status_code == 204

    body = listed(client, admin.key)

    # Newest first; the admin key itself was made by the operator (the fixture's store call).
    assert [event["action"] for event in body["data"]] == [
        "api_key.revoked",
        "api_key.created",
        "api_key.created",
    ]
    assert body["total"] == 3
    revoke_event, create_event, admin_event = body["data"]
    for event in body["data"]:
        assert set(event) == EVENT_FIELDS
        assert event["id"].startswith("evt_")
        assert RFC3339_Z.fullmatch(event["time"])
        assert event["changes"] is None
    assert create_event["actor"] == {"type": "key", "key_id": admin.id}
    assert create_event["target"] == {"key_id": created["id"]}
    assert create_event["request_id"] == "req-create-1"
    assert create_event["client_addr"] == "127.0.0.1"
    assert create_event["user_agent"] == "integration/1.0"
    assert revoke_event["actor"] == {"type": "key", "key_id": admin.id}
    assert revoke_event["target"] == {"key_id": created["id"]}
    assert revoke_event["request_id"] == "req-revoke-1"
    assert revoke_event["user_agent"] == "ops/2"
    assert admin_event["actor"] == {"type": "cli"}
    assert admin_event["target"] == {"key_id": admin.id}
    assert admin_event["request_id"] is admin_event["client_addr"] is None


def test_an_event_has_the_request_id_the_response_carries(client, admin):
    response = create(client, admin.key, "ci")  # no X-Request-ID: the service makes one

    [event] = [e for e in listed(client, admin.key)["data"] if e["actor"]["type"] == "key"]
    assert event["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(("trusted", "expected"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_the_client_address_is_the_one_the_service_sees(settings, trusted, expected):
    settings["APIKEYS_TRUSTED_PROXIES"] = trusted
    app = prepared(create_app(settings))
    client = app.test_client()
    admin = service.create_key(
        service.create_organization("acme").id, "admin", ["write:api_keys", "read:billing"]
    )
    reader = service.create_key(admin.organization_id, "reader", ["read:audit_log"])

    response = create(client, admin.key, "ci", **{"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 201

    [event] = [e for e in listed(client, reader.key)["data"] if e["actor"]["type"] == "key"]
    assert event["client_addr"] == expected
    db.close_all()


def test_the_cli_records_its_changes_as_the_cli(cli, org, admin, client):
    made = json.loads(cli("keys", "create", "--org", "acme", "--name", "x", "--all-scopes").stdout)
    assert cli("keys", "revoke", made["id"]).exit_code == 0

    revoked, created = listed(client, admin.key)["data"][:2]
    assert created == {
        **created,
        "action": "api_key.created",
        "actor": {"type": "cli"},
        "target": {"key_id": made["id"]},
        "request_id": None,
        "client_addr": None,
        "user_agent": None,
    }
    assert revoked["action"] == "api_key.revoked"
    assert revoked["actor"] == {"type": "cli"}
    assert revoked["target"] == {"key_id": made["id"]}


def test_the_bootstrap_key_is_recorded_once(settings):
    secret = crypto.generate_secret()
    settings["APIKEYS_BOOTSTRAP_KEY"] = secret
    app = prepared(create_app(settings))
    prepared(create_app(settings))  # a second start seeds nothing, records nothing

    [event] = AuditEvent.select()
    seeded = ApiKey.get(ApiKey.key_hash == crypto.hash_secret(secret))
    assert (event.action, event.actor, event.target) == (
        "api_key.created",
        {"type": "bootstrap"},
        {"key_id": seeded.id},
    )
    assert listed(app.test_client(), secret)["data"][0]["actor"] == {"type": "bootstrap"}
    db.close_all()


def test_update_changes_are_recorded_field_by_field(app, org, admin):
    # What PATCH records: each changed field's from and to, times as RFC 3339.
    before = {"name": "old", "scopes": ("read:billing",), "expires_at": None}
    after = {
        "name": "new",
        "scopes": ("read:billing",),
        "expires_at": datetime(2031, 1, 2, 3, 4, 5),
    }
    with db.database.atomic():
        event = audit.record(audit.UPDATED, org.id, admin.id, audit.CLI, audit.diff(before, after))

    assert AuditEvent.get_by_id(event.id).changed == {
        "name": {"from": "old", "to": "new"},
        "expires_at": {"from": None, "to": "2031-01-02T03:04:05Z"},
    }


def test_an_api_update_and_roll_record_what_changed_and_who(client, admin, make_key):
    target = make_key(name="target")
    patched = client.patch(
        f"{KEYS}/{target.id}",
        headers={**bearer(admin.key), "User-Agent": "rotator/1"},
        json={"name": "renamed", "rate_limit": "10/minute"},
    )
    rolled = client.post(
        f"{KEYS}/{target.id}/roll", headers=bearer(admin.key), json={"grace_period_seconds": 60}
    )
    assert (patched.status_code, rolled.status_code) == (200, 200)

    roll, update = listed(client, admin.key)["data"][:2]
    assert update["action"] == "api_key.updated"
    assert update["actor"] == {"type": "key", "key_id": admin.id}
    assert update["target"] == {"key_id": target.id}
    assert update["user_agent"] == "rotator/1"
    assert update["request_id"] == patched.headers["X-Request-ID"]
    assert update["changes"] == {
        "name": {"from": "target", "to": "renamed"},
        "rate_limit": {"from": None, "to": "10/minute"},
    }
    assert (roll["action"], roll["target"], roll["changes"]) == (
        "api_key.rolled",
        {"key_id": target.id},
        None,
    )
    # Neither the old secret nor the new one is anywhere in the events.
    text = json.dumps([update, roll])
    assert target.key not in text and rolled.json["key"] not in text


@pytest.mark.parametrize(
    "body",
    [
        {"name": "target"},
        {"name": "  target "},
        {"scopes": ["read:sessions", "read:billing", "read:billing"]},
        {"expires_in_days": None},
        {"rate_limit": None},
        {"name": "target", "scopes": ["read:billing", "read:sessions"], "rate_limit": None},
    ],
)
def test_an_update_that_changes_nothing_records_nothing(client, admin, make_key, body):
    target = make_key(name="target", key_scopes=["read:billing", "read:sessions"])
    url = f"{KEYS}/{target.id}"
    before = client.get(url, headers=bearer(admin.key)).json
    events = AuditEvent.select().count()

    response = client.patch(url, headers=bearer(admin.key), json=body)

    assert response.status_code == 200, response.json
    assert response.json == before
    assert AuditEvent.select().count() == events


def test_an_update_records_only_the_fields_it_changes(client, admin, make_key):
    target = make_key(name="target", key_scopes=["read:billing"])
    body = {"name": "target", "scopes": ["read:billing"], "rate_limit": "10/minute"}
    assert client.patch(f"{KEYS}/{target.id}", headers=bearer(admin.key), json=body).json

    update = listed(client, admin.key)["data"][0]
    assert update["action"] == "api_key.updated"
    assert update["changes"] == {"rate_limit": {"from": None, "to": "10/minute"}}


# --- never a secret -----------------------------------------------------------------------


def test_no_secret_a_client_sends_reaches_an_event(settings):
    settings["APIKEYS_TRUSTED_PROXIES"] = 1
    app = prepared(create_app(settings))
    client = app.test_client()
    admin = service.create_key(service.create_organization("acme").id, "admin", scopes.SCOPES)
    planted = crypto.generate_secret()
    # Every place a client can write text: headers the service reads, the query, the body.
    headers = {
        "User-Agent": f"curl/8 {planted}",
        "X-Request-ID": planted,
        "X-Forwarded-For": planted,
        "X-API-Key": admin.key,
        "Referer": planted,
    }
    response = client.post(
        f"{KEYS}?key={planted}",
        headers={**bearer(admin.key), **headers},
        # A name holding a key is refused (test_api_keys); one stored before that rule may
        # still be renamed, as the update below records.
        json={"name": "pasted", "scopes": ["read:billing"]},
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    made = response.json
    headers["User-Agent"] = planted[:20]  # a key cut short is masked too
    revoked = client.delete(
        f"{KEYS}/{made['id']}?key={planted}", headers={**bearer(admin.key), **headers}
    )
    assert revoked.status_code == 204
    with db.database.atomic():  # an update's changes, as PATCH will record them
        audit.record(
            audit.UPDATED,
            admin.organization_id,
            admin.id,
            audit.CLI,
            {"name": (f"pasted {planted}", "clean"), "scopes": ((planted,), ("read:billing",))},
        )

    shown = [
        client.get(EVENTS, headers=bearer(admin.key)).get_data(as_text=True),
        app.test_cli_runner().invoke(args=["audit", "list", "--org", "acme"]).stdout,
        repr(db.database.execute_sql("SELECT * FROM audit_event").fetchall()),
    ]
    assert len(json.loads(shown[0])["data"]) == 4
    for text in shown:
        for secret in (planted, admin.key, made["key"]):
            assert secret not in text
            assert secret[len(crypto.PREFIX) : 20] not in text
        assert crypto.PREFIX not in text.lower()
    assert "[redacted]" in shown[0]
    db.close_all()


@pytest.mark.parametrize(
    "user_agent",
    ["x" * 5000, "evk_" * 100, "\u00e9\U0001f50b" * 300, crypto.generate_secret() * 10],
    ids=["long", "prefixes", "non-ASCII", "secrets"],
)
def test_whatever_user_agent_a_client_sends_the_change_is_made(client, admin, user_agent):
    response = create(client, admin.key, "ci", **{"User-Agent": user_agent})

    assert response.status_code == 201, response.get_data(as_text=True)
    [event] = [e for e in listed(client, admin.key)["data"] if e["actor"]["type"] == "key"]
    assert 0 < len(event["user_agent"]) <= audit.MAX_CLIENT_TEXT
    assert "evk_" not in event["user_agent"]


@pytest.mark.parametrize("before", ["sdk/1.0 ", "y" * 230 + " "], ids=["whole", "across-the-cut"])
def test_a_key_without_its_prefix_in_a_user_agent_is_masked(client, admin, before):
    bare = crypto.generate_secret()[len(crypto.PREFIX) :]

    response = create(client, admin.key, "ci", **{"User-Agent": before + bare})

    assert response.status_code == 201, response.get_data(as_text=True)
    [event] = [e for e in listed(client, admin.key)["data"] if e["actor"]["type"] == "key"]
    assert event["user_agent"] == (before + crypto.MASK)[: audit.MAX_CLIENT_TEXT]


# --- the change and its event: both or neither --------------------------------------------


def _postgres() -> bool:
    return isinstance(db.database.obj, PostgresqlDatabase)


@contextmanager
def refused(table: str):
    """Every insert or update of ``table`` refused by a trigger, as a broken constraint
    would refuse it (an integrity error)."""
    if _postgres():
        db.database.execute_sql(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
            "'refused by the test' USING ERRCODE = 'check_violation'; END $$ LANGUAGE plpgsql"
        )
        db.database.execute_sql(
            f"CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    else:
        for kind in ("INSERT", "UPDATE"):
            db.database.execute_sql(
                f"CREATE TRIGGER refuse_{kind} BEFORE {kind} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
    try:
        yield
    finally:
        if _postgres():
            db.database.execute_sql(f"DROP TRIGGER refuse ON {table}")
            db.database.execute_sql("DROP FUNCTION refuse()")
        else:
            for kind in ("INSERT", "UPDATE"):
                db.database.execute_sql(f"DROP TRIGGER refuse_{kind}")


@contextmanager
def missing(table: str):
    """``table`` gone from the database, as a database that cannot take the write."""
    db.database.execute_sql(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        db.database.execute_sql(f"ALTER TABLE {table}_away RENAME TO {table}")


#: Each fault, and the answer it gets: a database that refuses a row the service thought
#: valid is a bug (500); one that cannot take the write is unavailable (503, retry).
FAULTS = {
    "refused": (refused, 500, "internal_error"),
    "missing": (missing, 503, "service_unavailable"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_change_whose_event_cannot_be_written_is_not_made(client, admin, make_key, fault):
    target = make_key(name="target")
    create(client, admin.key, "warm-up")  # last use recorded: the next requests write no row
    events, keys = AuditEvent.select().count(), ApiKey.select().count()
    breaks, status, code = FAULTS[fault]

    with breaks("audit_event"):
        made = create(client, admin.key, "never")
        patched = client.patch(
            f"{KEYS}/{target.id}", headers=bearer(admin.key), json={"name": "changed"}
        )
        rolled = client.post(f"{KEYS}/{target.id}/roll", headers=bearer(admin.key))
        revoked = client.delete(f"{KEYS}/{target.id}", headers=bearer(admin.key))

    assert ApiKey.get_by_id(target.id).name == "target"  # neither renamed nor rolled
    for response in (made, patched, rolled, revoked):
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.json["error"]["code"] == code
        assert "refused" not in response.get_data(as_text=True)  # no database text
    assert AuditEvent.select().count() == events
    assert ApiKey.select().count() == keys
    assert verify(target.key, 60) is not None  # still live


@pytest.mark.parametrize("fault", FAULTS)
def test_a_cli_change_whose_event_cannot_be_written_is_not_made(cli, org, make_key, fault):
    target = make_key(name="target")
    events, keys = AuditEvent.select().count(), ApiKey.select().count()
    breaks = FAULTS[fault][0]

    with breaks("audit_event"):
        made = cli("keys", "create", "--org", "acme", "--name", "x", "--scope", "read:billing")
        revoked = cli("keys", "revoke", target.id)

    for result in (made, revoked):
        assert result.exit_code == 1
        assert result.stdout == ""
        assert "nothing changed" in result.stderr and "Traceback" not in result.stderr
    assert AuditEvent.select().count() == events
    assert ApiKey.select().count() == keys
    assert verify(target.key, 60) is not None


@pytest.mark.parametrize("fault", FAULTS)
def test_a_bootstrap_whose_event_cannot_be_written_seeds_nothing(app, fault):
    secret = crypto.generate_secret()
    breaks = FAULTS[fault][0]

    with breaks("audit_event"), pytest.raises(PeeweeException):
        service.bootstrap(secret, "boot")

    assert verify(secret, 60) is None
    assert AuditEvent.select().count() == 0
    service.bootstrap(secret, "boot")  # the next start seeds it, with its event
    assert verify(secret, 60) is not None
    assert AuditEvent.select().count() == 1


def test_a_change_that_fails_leaves_no_event(client, admin, make_key):
    target = make_key(name="target")
    reader = make_key(name="reader", key_scopes=["read:billing"])
    create(client, admin.key, "taken")
    events = AuditEvent.select().count()

    assert create(client, admin.key, "taken").status_code == 400  # name_taken
    assert create(client, reader.key, "x").status_code == 403
    assert client.delete(f"{KEYS}/key_unknown", headers=bearer(admin.key)).status_code == 404
    with refused("api_key"):
        # (A refused insert of a key reads as its name taken: the unique index's error.)
        assert create(client, admin.key, "refused").status_code >= 400
        assert client.delete(f"{KEYS}/{target.id}", headers=bearer(admin.key)).status_code == 500
    assert "refused" not in names(client, admin.key)
    with missing("api_key"):
        assert service_fails(lambda: service.revoke_any(target.id))

    assert AuditEvent.select().count() == events
    assert verify(target.key, 60) is not None


def names(client, secret: str) -> list[str]:
    return [key["name"] for key in client.get(KEYS, headers=bearer(secret)).json["data"]]


def service_fails(call) -> bool:
    try:
        call()
    except PeeweeException:
        return True
    return False


# --- the listing --------------------------------------------------------------------------


def test_the_listing_needs_read_audit_log(client, make_key):
    without = make_key(key_scopes=["read:api_keys", "write:api_keys"])
    only = make_key(key_scopes=["read:audit_log"])

    assert client.get(EVENTS).status_code == 401
    refused_response = client.get(EVENTS, headers=bearer(without.key))
    assert refused_response.status_code == 403
    assert "read:audit_log" in refused_response.json["error"]["message"]
    assert listed(client, only.key)["total"] == 2


def test_one_organization_never_sees_anothers_events(client, make_key, other_org):
    ours = make_key(name="ours")
    theirs = make_key(name="theirs", organization=other_org)
    create(client, theirs.key, "their-new")

    mine = listed(client, ours.key)
    assert [event["target"]["key_id"] for event in mine["data"]] == [ours.id]
    assert mine["total"] == 1
    assert listed(client, theirs.key)["total"] == 2


def test_the_listing_pages_newest_first(client, admin):
    for number in range(6):
        create(client, admin.key, f"k{number}")
    everything = listed(client, admin.key)["data"]
    shown, cursor, between = [], None, 0
    while True:
        body = listed(client, admin.key, f"?limit=3&after={cursor}" if cursor else "?limit=3")
        assert body["total"] == 7 + between
        shown += body["data"]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
        between += 1
        create(client, admin.key, f"between-{between}")  # newer: not on a later page

    assert shown == everything
    times = [event["time"] for event in shown]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize(
    "query",
    [
        "?after=garbage",
        "?limit=0",
        "?limit=1001",
        "?after=%C3%A9",
        # int() takes each of these; a limit is ASCII digits.
        "?limit=%EF%BC%95",
        "?limit=1_0",
        "?limit=%2B5",
        "?limit=%205",
        "?limit=5%0A",
    ],
)
def test_a_bad_page_request_is_400(client, admin, query):
    response = client.get(EVENTS + query, headers=bearer(admin.key))

    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_request"
    assert set(response.json["error"]["details"]) == {query[1:].partition("=")[0]}


def test_a_cursor_of_another_organizations_events_is_400(client, admin, make_key, other_org, cli):
    theirs = make_key(name="theirs", organization=other_org)
    for number in range(2):
        create(client, theirs.key, f"k{number}")
    create(client, admin.key, "ours")
    cursor = listed(client, theirs.key, "?limit=1")["next_cursor"]

    response = client.get(f"{EVENTS}?limit=1&after={cursor}", headers=bearer(admin.key))
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert "cursor" in response.json["error"]["message"]
    assert listed(client, theirs.key, f"?limit=1&after={cursor}")["data"]
    # The operator's CLI alike: a cursor of globex's log is no cursor of acme's.
    refused = cli("audit", "list", "--org", "acme", "--after", cursor)
    assert refused.exit_code == 1 and "cursor" in refused.stderr
    assert cli("audit", "list", "--org", "globex", "--after", cursor).exit_code == 0


def test_audit_list_command(cli, client, admin, make_key):
    for number in range(3):
        make_key(name=f"k{number}")

    first = cli("audit", "list", "--org", "acme", "--limit", "2")
    page = json.loads(first.stdout)
    rest = json.loads(cli("audit", "list", "--org", "acme", "--after", page["next_cursor"]).stdout)

    assert first.exit_code == 0
    assert page["total"] == 4 and page["has_more"] is True and len(page["data"]) == 2
    assert rest["has_more"] is False and rest["next_cursor"] is None
    assert page["data"] + rest["data"] == listed(client, admin.key)["data"]
    unknown = cli("audit", "list", "--org", "nobody")
    assert unknown.exit_code == 1 and "nobody" in unknown.stderr
    assert cli("audit", "list", "--org", "acme", "--limit", "0").exit_code == 2
    bad_cursor = cli("audit", "list", "--org", "acme", "--after", "garbage")
    assert bad_cursor.exit_code == 1 and "cursor" in bad_cursor.stderr


# --- retention ----------------------------------------------------------------------------


def test_events_past_retention_are_never_listed_and_pruned_at_most_hourly(settings):
    settings["AUDIT_RETENTION_DAYS"] = 1
    start = datetime(2031, 3, 4, 5, 0, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        app = prepared(create_app(settings))
        client = app.test_client()
        admin = service.create_key(service.create_organization("acme").id, "admin", scopes.SCOPES)
        assert listed(client, admin.key)["total"] == 1

        clock.move_to(start + timedelta(days=1, minutes=-30))
        create(client, admin.key, "later")  # prunes (nothing yet): an hour has passed
        assert AuditEvent.select().count() == 2

        clock.move_to(start + timedelta(days=1, minutes=10))
        # The first event is past retention: not listed, though not pruned within the hour.
        body = listed(client, admin.key)
        assert [event["action"] for event in body["data"]] == ["api_key.created"]
        assert body["total"] == 1
        assert AuditEvent.select().count() == 2

        clock.move_to(start + timedelta(days=1, minutes=31))
        assert client.get(EVENTS).status_code == 401  # a request that did not authenticate
        assert AuditEvent.select().count() == 2  # touches no database: no prune
        listed(client, admin.key)
        assert AuditEvent.select().count() == 1

        clock.move_to(start + timedelta(days=3))
        # A start (here `flask db upgrade`) prunes too, before any request.
        assert app.test_cli_runner().invoke(args=["db", "upgrade"]).exit_code == 0
        assert AuditEvent.select().count() == 0
    db.close_all()


@contextmanager
def another_writer(database_url: str):
    """Another process's connection holding the lock a prune needs, until the block ends."""
    if database_url.startswith("sqlite"):
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        other = psycopg.connect(database_url)
        other.execute("LOCK TABLE audit_event IN EXCLUSIVE MODE")  # reads still go on
    try:
        yield
    finally:
        other.rollback()
        other.close()


def test_a_prune_never_holds_a_request_up_behind_another_writer(settings, database_url, caplog):
    settings["AUDIT_RETENTION_DAYS"] = 1
    settings["DATABASE_TIMEOUT"] = 3600  # a request's own writes would wait this long
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=3)):
        app = prepared(create_app(settings))  # its first prune is due an hour later
    with time_machine.travel(datetime.now(UTC) - timedelta(days=2), tick=False):
        admin = service.create_key(service.create_organization("acme").id, "admin", scopes.SCOPES)
    answers = []

    def list_keys():
        answers.append(app.test_client().get(KEYS, headers=bearer(admin.key)).status_code)

    with another_writer(database_url):
        request = threading.Thread(target=list_keys)
        request.start()
        request.join(timeout=60)
        assert not request.is_alive(), "the request waited on the prune"

    assert answers == [200]
    assert "could not prune the audit log" in caplog.text
    assert AuditEvent.select().count() == 1  # left for the next prune
    db.close_all()


@pytest.mark.parametrize("value", ["0", "-1", "abc", "36501"])
def test_audit_retention_days_must_be_sensible(monkeypatch, value):
    monkeypatch.setenv("AUDIT_RETENTION_DAYS", value)
    with pytest.raises(ConfigError, match="AUDIT_RETENTION_DAYS"):
        create_app({"TESTING": True, "DATABASE_URL": "sqlite:///unused.db"})


def test_audit_retention_days_defaults_to_a_year(app):
    assert app.config["AUDIT_RETENTION_DAYS"] == 365
