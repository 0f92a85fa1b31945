"""CPU per request in-process: WSGI calls straight into the app, no HTTP, no server.

    .venv/bin/python -m bench.inprocess [--requests 5000]

Seeds a fresh SQLite database with 1,000 keys, then calls, in rotation over those keys:
the bare Flask ceiling (bench/ceiling.py), the service's /healthz, and the check with
its rate limits off and on (Redis db 14, a key prefix of its own, deleted at the end).
Prints the CPU microseconds per request, best of 3 rounds (CPU time, so that other
processes on a shared machine do not count). What the HTTP benchmark cannot show:
where, in Python, a check's time goes.
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from apikeys import db
from app import create_app
from bench import ceiling, run, seed

REDIS_URL = "redis://127.0.0.1:6379/14"


def environ(path: str, secret: str) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {secret}",
        "HTTP_X_REQUIRED_SCOPE": run.SCOPE,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def cpu_per_request(app: Callable, path: str, keys: list[str], requests: int) -> float:
    """Microseconds of CPU per request to ``path``, best of 3 rounds after a warm-up."""
    statuses = []

    def call(number: int) -> None:
        body = app(environ(path, keys[number % len(keys)]), lambda s, h, e=None: statuses.append(s))
        b"".join(body)
        getattr(body, "close", lambda: None)()

    for number in range(2 * len(keys)):
        call(number)
    if not statuses[-1].startswith("200"):
        raise RuntimeError(f"{path} answered {statuses[-1]}")
    rounds = []
    for _ in range(3):
        start = time.process_time()
        for number in range(requests):
            call(number)
        rounds.append((time.process_time() - start) / requests)
    return min(rounds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    prefix = "bench-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'inprocess.db'}"
        db.init(url)
        db.migrate()
        with db.database.connection_context():
            keys = seed.keys(seed.organization("inprocess"), 1000)
        db.close_all()
        settings = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "RATELIMIT_KEY_PREFIX": prefix,
            "RATE_LIMIT_PER_KEY": run.RATE_LIMIT,
        }
        try:
            measured = {
                "bare Flask (the ceiling's app)": (ceiling.create_app(), run.CEILING),
                "the service's /healthz": (create_app(settings), "/healthz"),
                "the check, rate limits off": (
                    create_app({**settings, "RATELIMIT_ENABLED": False}),
                    run.CHECK,
                ),
                "the check, as shipped": (create_app(settings), run.CHECK),
            }
            for label, (app, path) in measured.items():
                print(f"{label:34}{cpu_per_request(app, path, keys, args.requests):6.0f} us")
        finally:
            db.close_all()
            run.delete_redis_keys(REDIS_URL, prefix)


if __name__ == "__main__":
    main()
