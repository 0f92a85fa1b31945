"""Tiny WSGI apps for serve.py to serve in tests of the server itself (apikeys.serving).

``echo``: answers the WSGI environ the server built, as JSON. ``GET /sleep?seconds=N``
sleeps first; ``GET /commit?seconds=N`` begins a commit (apikeys.deadline), then sleeps.
``impatient``: the same behind an adapter with one thread, a request deadline and a body
timeout of ``IMPATIENT_TIMEOUT`` seconds and a patience with a COMMIT of
``IMPATIENT_COMMIT_PATIENCE``, so that a test can pass them quickly; it writes the
service's request lines for the adapter's own answers.
``impatient_service``: the service (its database prepared), with ``GET /sleep?seconds=N``
added, behind an adapter with one thread and a request deadline of ``IMPATIENT_TIMEOUT``
seconds.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from apikeys import deadline, logs
from apikeys.serving import Adapter

IMPATIENT_TIMEOUT = 1.0
IMPATIENT_COMMIT_PATIENCE = 2.0
ECHOED = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "HTTP_HOST",
    "wsgi.url_scheme",
)


def echo_app(environ: dict[str, Any], start_response) -> list[bytes]:
    if environ["PATH_INFO"] == "/commit":  # a COMMIT that begins at once, and takes long
        deadline.begin_commit()
    if environ["PATH_INFO"] in ("/sleep", "/commit"):
        time.sleep(float(parse_qs(environ["QUERY_STRING"])["seconds"][0]))
    answer = {name: environ.get(name) for name in ECHOED}
    answer["body"] = environ["wsgi.input"].read().decode("latin-1")
    answer["headers"] = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    answer["repeated"] = sorted(environ.get("apikeys.repeated_headers", ()))
    body = json.dumps(answer).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def echo():
    return echo_app


def impatient() -> Adapter:
    logs.configure("json", "INFO")
    return Adapter(
        echo_app,
        threads=1,
        request_timeout=IMPATIENT_TIMEOUT,
        body_timeout=IMPATIENT_TIMEOUT,
        commit_patience=IMPATIENT_COMMIT_PATIENCE,
    )


def impatient_service() -> Adapter:
    from flask import request

    from apikeys import startup
    from app import create_app

    app = create_app()
    startup.prepare(app.config)  # as serve.py does for the service (one worker here)

    @app.get("/sleep")
    def sleep():
        time.sleep(float(request.args["seconds"]))
        return {"slept": True}

    return Adapter(app, threads=1, request_timeout=IMPATIENT_TIMEOUT)
