"""Each test builds its own world: a fresh app on a fresh database, Redis flushed."""

from __future__ import annotations

import secrets
import threading

import psycopg
import pytest
import redis
from flask import Flask
from werkzeug.serving import make_server

from apikeys import db, scopes, service, startup
from apikeys.models import Organization
from app import create_app
from tests.servers import SETTINGS, redis_server

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_configure(config):
    config.addinivalue_line("markers", "both_databases: run the test on SQLite and on PostgreSQL")
    config.addinivalue_line(
        "markers", "connection_pool: run the test on PostgreSQL, the one database pooled"
    )


def pytest_generate_tests(metafunc):
    if "database_url" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("connection_pool"):
        metafunc.parametrize("database_url", ["postgresql"], indirect=True)
    elif metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """The developer's own settings never leak into a test."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def redis_prefix():
    """The test's own key prefix in Redis, so that concurrent test runs never share counters."""
    return "test-" + secrets.token_hex(6)


@pytest.fixture
def redis_client(redis_prefix):
    """The real Redis on this machine; a missing Redis fails the test, never skips it."""
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield client
    for key in client.scan_iter(f"*{redis_prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def postgres_url():
    """A PostgreSQL schema of the test's own, dropped afterwards."""
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    if db.database.obj is not None:
        db.close_all()
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def database_url(request, tmp_path):
    """SQLite by default; PostgreSQL too for tests marked ``both_databases``."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'apikeys.db'}"


@pytest.fixture
def own_redis(settings, tmp_path):
    """A Redis server of this test's own, which the test may kill; the app's settings use it."""
    with redis_server(tmp_path) as (server, url):
        settings["REDIS_URL"] = url
        yield server


@pytest.fixture
def settings(database_url, redis_client, redis_prefix):
    """The test app's configuration; a test may change it before asking for ``app``."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "RATELIMIT_KEY_PREFIX": redis_prefix,
    }


@pytest.fixture
def cli(app):
    """``flask --app app ...`` in this process, on the test's app and database."""
    runner = app.test_cli_runner()

    def invoke(*args: str):
        result = runner.invoke(args=list(args))
        # Only click's own exit: an uncaught exception would be a traceback for the operator.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
        return result

    return invoke


def prepared(app: Flask) -> Flask:
    """``app`` on a prepared database (migrated, bootstrap key seeded): create_app never
    touches the database; serve.py and the CLI prepare it at start."""
    startup.prepare(app.config)
    return app


@pytest.fixture
def app(settings):
    app = prepared(create_app(settings))
    yield app
    db.close_all()


@pytest.fixture
def server(app):
    """The app behind a real, threaded HTTP server (its port): one thread per request."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.server_port
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def org(app):
    return Organization.create(name="acme")


@pytest.fixture
def other_org(app):
    return Organization.create(name="globex")


@pytest.fixture
def make_key(app, org):
    """Issue a key straight in the store; returns the IssuedKey (``.key`` is the secret)."""

    def make(name=None, key_scopes=scopes.SCOPES, organization=None, expires_in_days=None):
        return service.create_key(
            (organization or org).id,
            name or "key-" + secrets.token_hex(4),
            key_scopes,
            expires_in_days,
        )

    return make


@pytest.fixture
def admin(make_key):
    """A key of ``org`` with every scope."""
    return make_key(name="admin")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
