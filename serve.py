"""The production server: granian, configured here; bench/README.md has the numbers behind it.

    .venv/bin/python serve.py                           # app:create_app on 0.0.0.0:8000
    .venv/bin/python serve.py bench.ceiling:create_app  # another app factory, same settings

The environment may set ``HOST`` (default 0.0.0.0), ``PORT`` (8000) and
``WEB_CONCURRENCY`` (worker processes; default one per CPU). The service's own settings
(``DATABASE_URL``, ``REDIS_URL``, ...) are read by ``create_app`` as usual.
"""

from __future__ import annotations

import os
import sys

from granian import Granian
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings

#: One process per core: every request is mostly Python, which one process runs on one core.
WORKERS = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
#: Python threads per worker. One measured the same as two (bench/README.md); the second
#: keeps a worker answering while one request waits on the database's write lock.
BLOCKING_THREADS = 2
#: Milliseconds a client may take to send its request headers.
HEADER_READ_TIMEOUT_MS = 10_000
#: Seconds a worker may take to finish its requests on shutdown before it is killed.
WORKERS_KILL_TIMEOUT = 30
#: Connections waiting to be accepted.
BACKLOG = 1024


def server(target: str = "app:create_app") -> Granian:
    """granian serving the WSGI app that the factory ``target`` builds in each worker."""
    return Granian(
        target,
        factory=True,
        interface=Interfaces.WSGI,
        address=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8000")),
        workers=WORKERS,
        blocking_threads=BLOCKING_THREADS,
        backlog=BACKLOG,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS),
        respawn_failed_workers=True,
        workers_kill_timeout=WORKERS_KILL_TIMEOUT,
        # The service logs each request itself.
        log_access=False,
    )


if __name__ == "__main__":
    server(*sys.argv[1:2]).serve()
