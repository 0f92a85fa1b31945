"""Prometheus metrics, one registry per app."""

from __future__ import annotations

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from apikeys import ratelimit

#: What the storage may say while limits are still counted where they should be.
_UP = ("ok", "not configured", "disabled")


def init_app(app: Flask) -> None:
    registry = CollectorRegistry()
    # Read at each scrape, by a write to Redis: 0 while Redis is down or refuses writes
    # (out of memory), when limits are counted in each process's memory.
    Gauge(
        "apikeys_ratelimit_storage_up",
        "Whether the rate-limit storage (Redis) takes writes; 0 means in-process fallback limits.",
        registry=registry,
    ).set_function(lambda: float(ratelimit.storage_state(app) in _UP))
    app.extensions["apikeys.metrics"] = registry


def exposition(app: Flask) -> Response:
    """The app's metrics in Prometheus' text format."""
    return Response(
        generate_latest(app.extensions["apikeys.metrics"]), content_type=CONTENT_TYPE_LATEST
    )
