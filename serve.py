"""The production server: granian, configured here; bench/README.md has the numbers behind it.

    .venv/bin/python serve.py                           # app:create_app on 0.0.0.0:8000
    .venv/bin/python serve.py bench.ceiling:create_app  # another app factory, same settings

The environment may set ``HOST`` (default 0.0.0.0), ``PORT`` (8000) and
``WEB_CONCURRENCY`` (worker processes; default one per CPU). The service's own settings
(``DATABASE_URL``, ``REDIS_URL``, ...) are read by ``create_app`` as usual.

The workers' metrics are summed at each scrape through files in
``PROMETHEUS_MULTIPROC_DIR``: the operator's directory, emptied at start, or else a fresh
temporary one, removed at exit (apikeys.metrics).

For ``app:create_app``, this process checks the settings, migrates the database and seeds
``APIKEYS_BOOTSTRAP_KEY`` once, before any worker starts; a database it cannot reach then
stops it with one line on stderr. The workers never touch the database at start.

granian speaks RSGI to ``apikeys.serving``, which reads each request whole on the event
loop, bounded in size and time, and only then runs the WSGI app in a thread: see its
docstring for the guarantees and their bounds.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any

from granian import Granian
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.server.common import AbstractServer

from apikeys import config, logs, metrics, policy, serving, startup

#: One process per core: every request is mostly Python, which one process runs on one core.
WORKERS = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
#: Threads per worker running the app (apikeys.serving's pool; they never exit while the
#: worker lives). Two, not four: measured, four cost more CPU per request (the threads
#: contend for the GIL: 390-600 against 370-470 us per check) for no more throughput on
#: two cores; the second keeps a worker answering while one request waits on the
#: database's write lock.
APP_THREADS = 2
#: Paths whose requests run in APP_THREADS threads of their own: the sidecar's hot path
#: never queues behind key management waiting on the database's write lock.
OWN_THREADS = ("/api/v1/auth/check",)
#: Milliseconds a client may take to send its request headers.
HEADER_READ_TIMEOUT_MS = 10_000
#: Seconds a worker may take to finish its requests on shutdown before it is killed.
WORKERS_KILL_TIMEOUT = 30
#: Connections waiting to be accepted.
BACKLOG = 1024
#: Connections a worker holds at once; past them it accepts no more. An idle connection
#: costs the worker a task and a socket, and is closed after HEADER_READ_TIMEOUT_MS
#: without its headers; granian's default (BACKLOG / workers: 512 with 2 workers) let
#: about 1,100 idle connections stop the whole server, /healthz included.
CONNECTIONS_PER_WORKER = 4096


def server(target: str = "app:create_app") -> AbstractServer:
    """granian serving the WSGI app that the factory ``target`` builds in each worker."""
    return Granian(
        target,
        interface=Interfaces.RSGI,
        # Measured: asyncio's loop costs about a third more CPU per check than uvloop's.
        loop=Loops.uvloop,
        address=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8000")),
        workers=WORKERS,
        backlog=BACKLOG,
        backpressure=CONNECTIONS_PER_WORKER,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=HEADER_READ_TIMEOUT_MS,
            max_buffer_size=serving.MAX_BUFFER_BYTES,
        ),
        respawn_failed_workers=True,
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
        # The service logs each request itself.
        log_access=False,
    )


def check_settings() -> dict[str, Any]:
    """Stop on a setting the service cannot work with, once, before any worker starts:
    in a worker it would only fail that worker, which granian would respawn forever."""
    try:
        settings = config.from_environment()
        config.validate(settings)
        if settings["APIKEYS_POLICY_FILE"]:
            policy.load(settings["APIKEYS_POLICY_FILE"])
    except config.ConfigError as error:
        sys.exit(f"Error: {error}")
    logs.configure(settings["LOG_FORMAT"], settings["LOG_LEVEL"])
    if WORKERS > 1 and not settings["REDIS_URL"]:
        logging.getLogger("serve").warning(
            "%d workers without REDIS_URL: each worker counts rate limits on its own, so a "
            "key may make up to %d times its limit; set REDIS_URL to share them",
            WORKERS,
            WORKERS,
        )
    return settings


def prepare_database(settings: dict[str, Any]) -> None:
    """Migrate and seed the bootstrap key, once, before any worker starts: workers never
    touch the database at start, so one started during an outage answers 503 until it
    is back, instead of exiting (which granian takes for a crash loop and stops)."""
    try:
        startup.prepare(settings)
    except config.ConfigError as error:
        sys.exit(f"Error: {error}")
    except startup.UNREACHABLE as error:
        sys.exit(f"Error: {startup.describe(error)}")


def serve(target: str = "app:create_app") -> None:
    # Before the workers: they sum each other's metrics through its files.
    with metrics.multiprocess_directory():
        if target == "app:create_app":
            prepare_database(check_settings())
        loader = functools.partial(serving.load, threads=APP_THREADS, own_threads=OWN_THREADS)
        server(target).serve(target_loader=loader)  # type: ignore[arg-type]  # an RSGI app


if __name__ == "__main__":
    serve(*sys.argv[1:2])
