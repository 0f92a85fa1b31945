"""Liveness, readiness and metrics: what orchestrators and Prometheus read."""

from __future__ import annotations

import pytest

from app import create_app
from tests.concurrency import every_connection_busy
from tests.conftest import prepared

#: Nothing listens here: a Redis that is down.
DEAD_REDIS = "redis://127.0.0.1:1/0"


def storage_up(client) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    lines = response.get_data(as_text=True).splitlines()
    (sample,) = [line for line in lines if line.startswith("apikeys_ratelimit_storage_up ")]
    return float(sample.split()[1])


def test_healthz(client):
    assert client.get("/healthz").json == {"status": "ok"}


@pytest.mark.both_databases
def test_ready_when_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert (response.status_code, response.json) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "redis": "ok"}},
    )


def test_ready_without_redis_and_says_so(settings):
    # Limits fall back to memory: every instance shares the Redis, so unready would pull all.
    client = prepared(create_app(settings | {"REDIS_URL": DEAD_REDIS})).test_client()
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok", "redis": "down"}}


def test_ready_without_redis_configured(settings):
    app = prepared(create_app(settings | {"REDIS_URL": None}))
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["redis"] == "not configured"


@pytest.mark.connection_pool
def test_not_ready_when_no_database_connection_can_be_had(settings):
    app = prepared(create_app(settings | {"DATABASE_POOL_SIZE": 1, "DATABASE_POOL_TIMEOUT": 1}))
    with every_connection_busy():
        response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["error"]["details"] == {"database": "down", "redis": "ok"}


def test_metrics_show_whether_the_rate_limit_storage_answers(client, settings):
    assert storage_up(client) == 1.0
    assert storage_up(create_app(settings | {"REDIS_URL": DEAD_REDIS}).test_client()) == 0.0
