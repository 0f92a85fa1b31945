"""The service as the benchmark serves it: its own Redis key prefix, nothing else changed.

The prefix keeps the benchmark's counters apart from anyone else's on a shared Redis, and
lets the driver delete exactly its own keys afterwards. ``BENCH_CONFIG`` (JSON) may add
settings, to compare them (``bench/compare.py``).
"""

from __future__ import annotations

import json
import os

from flask import Flask

from app import create_app as create_service


def create_app() -> Flask:
    overrides = json.loads(os.environ.get("BENCH_CONFIG") or "{}")
    return create_service({"RATELIMIT_KEY_PREFIX": os.environ["BENCH_REDIS_PREFIX"], **overrides})
