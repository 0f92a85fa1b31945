"""APIKEYS_BOOTSTRAP_KEY: a key seeded at start, once, with every scope."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apikeys import crypto, db, scopes
from apikeys.config import ConfigError
from apikeys.models import ApiKey, Organization
from app import create_app
from tests.concurrency import run_concurrently
from tests.conftest import bearer, prepared

pytestmark = pytest.mark.both_databases

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def secret():
    return crypto.generate_secret()


@pytest.fixture
def start(settings, monkeypatch, secret):
    """Start the app as an operator would: the bootstrap key in the environment."""
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_KEY", secret)

    def start_app():
        return prepared(create_app(settings))

    yield start_app
    db.close_all()


def _seeded(secret: str) -> list[ApiKey]:
    return list(ApiKey.select().where(ApiKey.key_hash == crypto.hash_secret(secret)))


def test_seeds_a_key_with_every_scope_in_the_default_organization(start, secret):
    client = start().test_client()

    listed = client.get("/api/v1/org/api-keys", headers=bearer(secret))

    assert listed.status_code == 200
    [key] = listed.json["data"]
    assert key["scopes"] == list(scopes.SCOPES)
    assert key["key_hint"] == crypto.hint(secret)
    [seeded] = _seeded(secret)
    assert seeded.organization.name == "default"
    assert seeded.revoked_at is None and seeded.expires_at is None
    # Every scope, so it can hand every scope on.
    created = client.post(
        "/api/v1/org/api-keys",
        headers=bearer(secret),
        json={"name": "everything", "scopes": list(scopes.SCOPES)},
    )
    assert created.status_code == 201


def test_the_bootstrap_keys_name_may_be_sent_back_as_it_was_read(start, secret):
    client = start().test_client()
    [key] = client.get("/api/v1/org/api-keys", headers=bearer(secret)).json["data"]
    assert key["name"] == f"bootstrap ...{secret[-4:]}"

    unchanged = client.patch(
        f"/api/v1/org/api-keys/{key['id']}", headers=bearer(secret), json={"name": key["name"]}
    )

    assert unchanged.status_code == 200, unchanged.json
    assert unchanged.json == key


def test_seeds_into_the_organization_named_by_apikeys_bootstrap_org(start, secret, monkeypatch):
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_ORG", "fleet-ops")

    start()

    [seeded] = _seeded(secret)
    assert seeded.organization.name == "fleet-ops"
    assert not Organization.select().where(Organization.name == "default").exists()


def test_joins_an_existing_organization_of_that_name(start, secret, settings):
    prepared(create_app({**settings, "APIKEYS_BOOTSTRAP_KEY": None}))
    existing = Organization.create(name="default")

    start()

    [seeded] = _seeded(secret)
    assert seeded.organization_id == existing.id


def test_is_idempotent_across_restarts(start, secret):
    start()
    client = start().test_client()

    assert len(_seeded(secret)) == 1
    assert ApiKey.select().count() == 1
    assert client.get("/api/v1/org/api-keys", headers=bearer(secret)).json["total"] == 1


def test_a_revoked_bootstrap_key_stays_revoked_after_restart(start, secret):
    client = start().test_client()
    [seeded] = _seeded(secret)
    revoked = client.delete(f"/api/v1/org/api-keys/{seeded.id}", headers=bearer(secret))
    assert revoked.status_code == 204

    client = start().test_client()

    assert client.get("/api/v1/org/api-keys", headers=bearer(secret)).status_code == 401
    [still] = _seeded(secret)
    assert still.id == seeded.id and still.revoked_at is not None
    assert ApiKey.select().count() == 1


def _mistyped(secret: str) -> str:
    """A real key with one character changed: the checksum no longer matches."""
    return secret[:10] + ("b" if secret[10] == "a" else "a") + secret[11:]


@pytest.mark.parametrize(
    "make_bad",
    [lambda _: "not-a-key", lambda _: "evk_" + "A" * 38, _mistyped],
    ids=["garbage", "bad-checksum", "mistyped"],
)
def test_an_invalid_bootstrap_key_stops_the_app_at_start(settings, monkeypatch, make_bad, secret):
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_KEY", make_bad(secret))

    with pytest.raises(ConfigError, match="APIKEYS_BOOTSTRAP_KEY is not a valid key"):
        prepared(create_app(settings))
    assert ApiKey.select().count() == 0
    assert Organization.select().count() == 0


def test_an_invalid_bootstrap_key_stops_the_cli_with_a_clear_message(tmp_path):
    url = f"sqlite:///{tmp_path / 'apikeys.db'}"
    env = {**os.environ, "DATABASE_URL": url, "APIKEYS_BOOTSTRAP_KEY": "evk_nope"}

    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", "list", "--org", "default"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert result.stdout == ""
    assert "APIKEYS_BOOTSTRAP_KEY is not a valid key" in result.stderr
    assert "keys generate" in result.stderr


def test_the_bootstrap_secret_is_never_logged(start, secret, caplog, capsys):
    caplog.set_level("DEBUG")

    client = start().test_client()
    client.get("/api/v1/org/api-keys", headers=bearer(secret))

    captured = capsys.readouterr()
    assert "0001_initial" in caplog.text  # the capture does see the start's log lines
    assert secret not in caplog.text
    assert secret not in captured.out + captured.err


def test_concurrent_starts_seed_exactly_one_key(database_url, secret, monkeypatch):
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_KEY", secret)

    def start_app(url: str) -> str:
        prepared(create_app({"TESTING": True, "DATABASE_URL": url}))
        return "started"

    outcomes = run_concurrently(start_app, [(database_url,)] * 6)

    assert outcomes == [("ok", "started")] * 6
    db.init(database_url)
    [seeded] = _seeded(secret)
    assert seeded.scopes == scopes.SCOPES
    assert ApiKey.select().count() == 1
    assert Organization.select().count() == 1


@pytest.mark.parametrize(
    "name", ["   ", "\u3164", "\u200d", "\u2800", "acme\u2028", "x" * 129, "acme EVK_0"]
)
def test_an_invalid_bootstrap_organization_name_stops_the_app_at_start(
    settings, monkeypatch, secret, name
):
    # The API's rules for names: PostgreSQL refused 129 characters with a traceback, and a
    # blank name was stored.
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_KEY", secret)
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_ORG", name)

    with pytest.raises(ConfigError, match="APIKEYS_BOOTSTRAP_ORG is not a valid name"):
        prepared(create_app(settings))
    assert ApiKey.select().count() == 0
    assert Organization.select().count() == 0


def test_the_bootstrap_organization_name_is_trimmed(start, secret, monkeypatch):
    monkeypatch.setenv("APIKEYS_BOOTSTRAP_ORG", "  fleet ops\t")

    start()

    [seeded] = _seeded(secret)
    assert seeded.organization.name == "fleet ops"
