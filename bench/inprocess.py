"""CPU per request in-process: WSGI calls straight into the app, no HTTP, no server.

    .venv/bin/python -m bench.inprocess [--requests 5000]
    .venv/bin/python -m bench.inprocess --instructions   # a few minutes; needs valgrind

Seeds a fresh SQLite database with 1,000 keys, then calls, in rotation over those keys:
the bare Flask ceiling (bench/ceiling.py), the service's /healthz, and the check with
its rate limits off and on (Redis db 14, a key prefix of its own, deleted at the end),
with request logs and metrics on as serve.py runs them (metrics in multiprocess files).
Prints the CPU microseconds per request, best of 3 rounds (CPU time, so that other
processes on a shared machine do not count). What the HTTP benchmark cannot show:
where, in Python, a check's time goes.

``--instructions`` counts instructions instead, with valgrind's callgrind: the same
count for the same code whatever else the machine does, where CPU time on a shared VM
drifts by a fifth between runs. Each app runs in two processes under callgrind, one
that only warms up and one that then serves the measured requests; the difference,
divided by their number, is one request's instructions. These rotate over 200 keys
rather than 1,000, to keep valgrind's run to a few minutes.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apikeys import db, metrics
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


def cpu_per_request(app: Callable, path: str, keys: list[str], requests: int, rounds: int) -> float:
    """Microseconds of CPU per request to ``path``, best of ``rounds`` after a warm-up."""
    statuses = []

    def call(number: int) -> None:
        body = app(environ(path, keys[number % len(keys)]), lambda s, h, e=None: statuses.append(s))
        b"".join(body)
        getattr(body, "close", lambda: None)()

    for number in range(2 * len(keys)):
        call(number)
    if not statuses[-1].startswith("200"):
        raise RuntimeError(f"{path} answered {statuses[-1]}")
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for number in range(requests):
            call(number)
        best = min(best, (time.process_time() - start) / max(1, requests))
    return best * 1e6


def instructions(label: str, requests: int) -> int:
    """Instructions one request to the app ``label`` takes, counted by callgrind."""

    def collected(measured: int) -> int:
        command = [
            *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
            *(sys.executable, "-m", "bench.inprocess", "--only", label),
            *("--requests", str(measured), "--rounds", "1", "--keys", "200"),
        ]
        # The same hash seed in both, so that they run the very same code paths.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        child = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        collected = re.search(r"Collected : (\d+)", child.stderr)
        if collected is None:
            raise RuntimeError(f"callgrind reported no count: {child.stderr[-500:]}")
        return int(collected.group(1))

    with ThreadPoolExecutor(2) as pool:
        warm_only, measured = pool.map(collected, (0, requests))
    return (measured - warm_only) // requests


LABELS = {
    "bare": "bare Flask (the ceiling's app)",
    "healthz": "the service's /healthz",
    "check-unlimited": "the check, rate limits off",
    "check": "the check, as shipped",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--keys", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=LABELS, help="measure this app alone")
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    args = parser.parse_args()
    if args.instructions:
        for label, title in LABELS.items():
            print(f"{title:34}{instructions(label, args.requests or 1000):9,} instructions")
        return
    prefix = "bench-" + secrets.token_hex(4)
    # Metrics as serve.py's workers count them: in files, for the scrape to sum.
    with metrics.multiprocess_directory(), tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'inprocess.db'}"
        db.init(url)
        db.migrate()
        with db.database.connection_context():
            keys = seed.keys(seed.organization("inprocess"), args.keys)
        db.close_all()
        settings = {
            "DATABASE_URL": url,
            "REDIS_URL": REDIS_URL,
            "RATELIMIT_KEY_PREFIX": prefix,
            "RATE_LIMIT_PER_KEY": run.RATE_LIMIT,
        }
        apps = {
            "bare": lambda: (ceiling.create_app(), run.CEILING),
            "healthz": lambda: (create_app(settings), "/healthz"),
            "check-unlimited": lambda: (
                create_app({**settings, "RATELIMIT_ENABLED": False}),
                run.CHECK,
            ),
            "check": lambda: (create_app(settings), run.CHECK),
        }
        try:
            for label, title in LABELS.items():
                if args.only in (None, label):
                    app, path = apps[label]()
                    requests = 5000 if args.requests is None else args.requests
                    cpu = cpu_per_request(app, path, keys, requests, args.rounds)
                    print(f"{title:34}{cpu:6.0f} us")
        finally:
            db.close_all()
            run.delete_redis_keys(REDIS_URL, prefix)


if __name__ == "__main__":
    main()
