"""The service as the benchmark serves it: its own Redis key prefix, nothing else changed.

The prefix keeps the benchmark's counters apart from anyone else's on a shared Redis, and
lets the driver delete exactly its own keys afterwards. ``BENCH_CONFIG`` (JSON) may add
settings, to compare them (``bench/compare.py``); in it, ``"BENCH_HEADERS": false`` turns
the rate-limit headers off, only to measure what they cost (the contract requires them).
"""

from __future__ import annotations

import json
import os

from flask import Flask

from app import create_app as create_service


def create_app() -> Flask:
    overrides = json.loads(os.environ.get("BENCH_CONFIG") or "{}")
    headers = overrides.pop("BENCH_HEADERS", True)
    app = create_service({"RATELIMIT_KEY_PREFIX": os.environ["BENCH_REDIS_PREFIX"], **overrides})
    if not headers:
        for limiter in app.extensions["limiter"]:
            limiter._headers_enabled = False
    return app
