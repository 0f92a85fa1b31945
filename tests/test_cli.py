"""The operator's commands: JSON on stdout, one clean line on stderr for a mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apikeys import crypto, db, scopes
from apikeys.audit import AuditEvent
from apikeys.models import ApiKey, Organization
from app import create_app
from tests.conftest import bearer, prepared
from tests.test_api_keys import LEAKY_NAMES
from tests.test_migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
VALID = ("--org", "acme", "--name", "x", "--scope", "read:billing")


def flask(database_url: str, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """``flask --app app COMMAND`` for each command, as an operator runs them (no Redis).

    The commands run at the same time, each in its own process; results in order.
    """
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("REDIS_URL", None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        results.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return results


def assert_clean_failure(result, message: str) -> None:
    """A user's mistake: non-zero exit, the reason on stderr, no traceback, nothing on stdout."""
    if isinstance(result, subprocess.CompletedProcess):
        assert result.returncode != 0
    else:
        assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_operator_workflow_in_real_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'ops.db'}"

    # A fresh database, three processes at once: each start applies migrations safely.
    upgraded, created_org, generated = flask(
        url, ("db", "upgrade"), ("orgs", "create", "acme"), ("keys", "generate")
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert isinstance(json.loads(upgraded.stdout)["applied"], list)
    assert created_org.returncode == 0, created_org.stderr
    org = json.loads(created_org.stdout)
    assert set(org) == {"id", "name"} and org["name"] == "acme"
    assert generated.returncode == 0, generated.stderr
    assert crypto.is_well_formed(generated.stdout.strip())

    [created] = flask(
        url,
        (
            *("keys", "create", "--org", "acme", "--name", "ops"),
            *("--scope", "read:api_keys", "--scope", "write:api_keys", "--expires-in-days", "30"),
        ),
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert set(key) == {"id", "name", "key", "scopes", "created_at", "expires_at", "rate_limit"}
    assert key["name"] == "ops" and key["scopes"] == ["read:api_keys", "write:api_keys"]
    assert crypto.is_well_formed(key["key"])
    assert key["created_at"].endswith("Z") and key["expires_at"].endswith("Z")
    client = create_app({"TESTING": True, "DATABASE_URL": url}).test_client()
    recorded = db.database.execute_sql("SELECT name FROM schema_migration").fetchall()
    assert [name for (name,) in recorded] == MIGRATIONS
    assert client.get("/api/v1/org/api-keys", headers=bearer(key["key"])).status_code == 200
    # The generated secret was printed, not stored.
    assert (
        client.get("/api/v1/org/api-keys", headers=bearer(generated.stdout.strip())).status_code
        == 401
    )

    [listed] = flask(url, ("keys", "list", "--org", org["id"]))
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert listing["total"] == 1 and [k["id"] for k in listing["data"]] == [key["id"]]
    assert key["key"] not in listed.stdout

    [revoked] = flask(url, ("keys", "revoke", key["id"]))
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["id"] == key["id"]
    assert client.get("/api/v1/org/api-keys", headers=bearer(key["key"])).status_code == 401
    db.close_all()


def test_mistakes_in_real_processes_fail_cleanly(tmp_path):
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    prepared(create_app({"TESTING": True, "DATABASE_URL": url}))
    Organization.create(name="acme")
    db.close_all()

    duplicate, unknown_org = flask(
        url,
        ("orgs", "create", "acme"),
        ("keys", "create", "--org", "nope", "--name", "x", "--scope", "read:billing"),
    )

    assert_clean_failure(duplicate, "already exists")
    assert_clean_failure(unknown_org, "nope")


def test_generate_prints_a_well_formed_secret_that_is_not_stored(cli, client, org):
    before = ApiKey.select().count()

    result = cli("keys", "generate")

    secret = result.stdout.strip()
    assert result.exit_code == 0
    assert crypto.is_well_formed(secret)
    assert cli("keys", "generate").stdout.strip() != secret
    assert ApiKey.select().count() == before
    assert not ApiKey.select().where(ApiKey.key_hash == crypto.hash_secret(secret)).exists()
    assert client.get("/api/v1/org/api-keys", headers=bearer(secret)).status_code == 401


def test_orgs_create_prints_the_organization(cli):
    result = cli("orgs", "create", "Fleet Ops")

    assert result.exit_code == 0
    created = json.loads(result.stdout)
    assert created == {"id": created["id"], "name": "Fleet Ops"}
    assert Organization.get_by_id(created["id"]).name == "Fleet Ops"


def test_orgs_create_refuses_a_taken_name(cli, org):
    result = cli("orgs", "create", org.name)

    assert_clean_failure(result, "already exists")
    assert Organization.select().count() == 1


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "x" * 129,
        "bad\x07name",
        f"acme {crypto.generate_secret()}",
        f"acme {crypto.generate_secret()[len(crypto.PREFIX) :]}",
    ],
    ids=["empty", "blank", "long", "control-character", "key", "key-without-prefix"],
)
def test_orgs_create_refuses_a_malformed_name(cli, name):
    result = cli("orgs", "create", name)

    assert_clean_failure(result, "NAME")
    assert Organization.select().count() == 0


@pytest.mark.parametrize("by", ["id", "name"])
def test_keys_create_finds_the_organization_by_id_or_name(cli, client, org, by):
    result = cli(
        "keys", "create", "--org", getattr(org, by), "--name", "ci", "--scope", "read:api_keys"
    )

    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert ApiKey.get_by_id(created["id"]).organization_id == org.id
    listed = client.get("/api/v1/org/api-keys", headers=bearer(created["key"]))
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json["data"]] == [created["id"]]


def test_keys_create_collapses_and_orders_scopes(cli, org):
    result = cli(
        "keys",
        *("create", "--org", "acme", "--name", "ci"),
        *("--scope", "read:sessions", "--scope", "read:billing", "--scope", "read:sessions"),
    )

    created = json.loads(result.stdout)
    assert created["scopes"] == ["read:billing", "read:sessions"]
    assert created["expires_at"] is None


def test_keys_create_all_scopes_grants_every_scope(cli, client, org):
    result = cli("keys", "create", "--org", "acme", "--name", "root", "--all-scopes")

    created = json.loads(result.stdout)
    assert created["scopes"] == list(scopes.SCOPES)
    everything = client.post(
        "/api/v1/org/api-keys",
        headers=bearer(created["key"]),
        json={"name": "child", "scopes": list(scopes.SCOPES)},
    )
    assert everything.status_code == 201


def test_keys_create_expires_in_days(cli, org):
    result = cli(
        *("keys", "create", "--org", "acme", "--name", "ci", "--scope", "read:billing"),
        *("--expires-in-days", "7"),
    )

    created = json.loads(result.stdout)
    stored = ApiKey.get_by_id(created["id"])
    assert (stored.expires_at - stored.created_at).days == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--org", "nope", "--name", "x", "--scope", "read:billing"), "nope"),
        (("--org", "acme", "--name", "x", "--scope", "read:everything"), "read:everything"),
        (("--org", "acme", "--name", "x", "--scope", "a", "--scope", "b"), "'a', 'b'"),
        (("--org", "acme", "--name", "taken", "--scope", "read:billing"), "already exists"),
        (("--org", "acme", "--name", "x"), "--scope"),
        (("--org", "acme", "--name", "x", "--all-scopes", "--scope", "bogus"), "--all-scopes"),
        (("--org", "acme", "--name", "  ", "--scope", "read:billing"), "--name"),
        (("--org", "acme", "--name", "x" * 129, "--scope", "read:billing"), "--name"),
        (("--org", "acme", "--name", "a\x1bb", "--scope", "read:billing"), "--name"),
        ((*VALID, "--expires-in-days", "0"), "1<=x<=3650"),
        ((*VALID, "--expires-in-days", "3651"), "1<=x<=3650"),
        ((*VALID, "--expires-in-days", "soon"), "soon"),
    ],
    ids=[
        "unknown-org",
        "bad-scope",
        "bad-scopes",
        "taken-name",
        "no-scope",
        "scope-and-all-scopes",
        "blank-name",
        "long-name",
        "control-character",
        "expires-zero",
        "expires-too-far",
        "expires-not-a-number",
    ],
)
def test_keys_create_mistakes_fail_cleanly(cli, make_key, args, message):
    make_key(name="taken")
    before = ApiKey.select().count()

    result = cli("keys", "create", *args)

    assert_clean_failure(result, message)
    assert ApiKey.select().count() == before


@pytest.mark.parametrize("leaky", LEAKY_NAMES.values(), ids=LEAKY_NAMES.keys())
def test_keys_create_refuses_a_name_holding_a_key(cli, make_key, leaky):
    secret = make_key(name="victim").key
    before = ApiKey.select().count(), AuditEvent.select().count()

    result = cli("keys", "create", *("--org", "acme", "--name", leaky(secret)), "--all-scopes")

    assert_clean_failure(result, "--name: Must not contain an API key")
    assert secret not in result.stderr and secret[len(crypto.PREFIX) :] not in result.stderr
    assert (ApiKey.select().count(), AuditEvent.select().count()) == before


def test_keys_list_prints_live_keys_newest_first(cli, org, other_org, make_key):
    first = make_key(name="first")
    second = make_key(name="second")
    gone = make_key(name="gone")
    make_key(name="elsewhere", organization=other_org)
    cli("keys", "revoke", gone.id)

    result = cli("keys", "list", "--org", "acme")

    assert result.exit_code == 0
    listed = json.loads(result.stdout)
    assert listed["total"] == 2
    assert [k["id"] for k in listed["data"]] == [second.id, first.id]
    assert all("key" not in k for k in listed["data"])
    assert first.key not in result.stdout and second.key not in result.stdout


def test_keys_list_of_an_unknown_organization_fails_cleanly(cli):
    assert_clean_failure(cli("keys", "list", "--org", "nope"), "nope")


def test_keys_revoke_makes_the_key_fail_at_once(cli, client, admin):
    assert client.get("/api/v1/org/api-keys", headers=bearer(admin.key)).status_code == 200

    result = cli("keys", "revoke", admin.id)

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"id": admin.id, "revoked": True}
    assert client.get("/api/v1/org/api-keys", headers=bearer(admin.key)).status_code == 401
    assert ApiKey.get_by_id(admin.id).revoked_at is not None


def test_keys_revoke_of_an_unknown_or_revoked_key_fails_cleanly(cli, admin):
    assert_clean_failure(cli("keys", "revoke", "key_unknown"), "key_unknown")
    cli("keys", "revoke", admin.id)
    revoked_at = ApiKey.get_by_id(admin.id).revoked_at

    again = cli("keys", "revoke", admin.id)

    assert_clean_failure(again, f"No live key with id {admin.id!r}")
    assert ApiKey.get_by_id(admin.id).revoked_at == revoked_at


def test_a_key_given_where_an_id_org_or_scope_goes_is_never_printed_back(cli, admin, org):
    secret = admin.key
    for args in (
        ("keys", "revoke", secret),
        ("keys", "list", "--org", secret),
        ("keys", "create", "--org", secret, "--name", "x", "--scope", "read:billing"),
        ("keys", "create", "--org", org.id, "--name", "x", "--scope", secret),
        ("orgs", "policy", secret, "--require-expiry"),
        ("audit", "list", "--org", secret),
    ):
        result = cli(*args)
        assert_clean_failure(result, "[redacted]")
        assert secret not in result.stderr and secret[4:] not in result.stderr


def test_a_revoked_keys_name_can_be_reused(cli, make_key):
    old = make_key(name="ci")
    cli("keys", "revoke", old.id)

    result = cli("keys", "create", "--org", "acme", "--name", "ci", "--scope", "read:billing")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] != old.id


BLANK_OR_BROKEN = ["\u200d", "\u200c\u200d", "\u3164", "\u2800", "\ufe0f", "CI\u2028", "\u2029CI"]


@pytest.mark.both_databases
@pytest.mark.parametrize("name", BLANK_OR_BROKEN)
def test_names_follow_the_apis_rules(cli, org, name):
    assert_clean_failure(cli("orgs", "create", name), "NAME")
    assert_clean_failure(cli("keys", "create", *VALID[:2], "--name", name, *VALID[4:]), "--name")
    assert Organization.select().count() == 1
    assert ApiKey.select().count() == 0


@pytest.mark.parametrize(
    "name",
    [
        "\U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    ],
)
def test_emoji_and_persian_names_are_kept(cli, org, name):
    assert json.loads(cli("orgs", "create", name).stdout)["name"] == name
    created = cli("keys", "create", *VALID[:2], "--name", name, *VALID[4:])
    assert json.loads(created.stdout)["name"] == name


@pytest.mark.both_databases
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "list", "--org", "acme\x00"), "--org"),
        (("keys", "revoke", "key_\x00"), "KEY_ID"),
        (("keys", "create", "--org", "\x00", "--name", "x", "--scope", "read:billing"), "--org"),
        (("orgs", "create", "a\x00b"), "NAME"),
    ],
)
def test_a_nul_fails_cleanly(cli, org, args, message):
    assert_clean_failure(cli(*args), message)


@pytest.mark.both_databases
def test_bytes_that_are_not_utf8_fail_cleanly_in_real_processes(app, database_url):
    # The shell hands Python such bytes as lone surrogates, which no database driver takes.
    commands = [
        ("keys", "list", "--org", "\udcff"),
        ("keys", "revoke", "key_\udcff"),
        ("keys", "create", "--org", "\udcff", "--name", "x", "--scope", "read:billing"),
        ("keys", "create", "--org", "acme", "--name", "\udcc3", "--scope", "read:billing"),
        ("orgs", "create", "caf\udce9"),
    ]
    for result in flask(database_url, *commands):
        assert_clean_failure(result, "not valid UTF-8")
    assert ApiKey.select().count() == Organization.select().count() == 0
