"""Prometheus metrics, one registry per app."""

from __future__ import annotations

from flask import Flask, Response
from flask_limiter import Limiter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest


def init_app(app: Flask) -> None:
    limiter: Limiter = app.extensions["apikeys.limiter"]
    registry = CollectorRegistry()
    # Read at each scrape: 0 while Redis is unreachable and limits are counted in memory.
    Gauge(
        "apikeys_ratelimit_storage_up",
        "Whether the rate-limit storage (Redis) answers; 0 means in-process fallback limits.",
        registry=registry,
    ).set_function(lambda: float(limiter.storage.check()))
    app.extensions["apikeys.metrics"] = registry


def exposition(app: Flask) -> Response:
    """The app's metrics in Prometheus' text format."""
    return Response(
        generate_latest(app.extensions["apikeys.metrics"]), content_type=CONTENT_TYPE_LATEST
    )
