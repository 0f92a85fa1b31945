"""Tiny WSGI apps for serve.py to serve in tests of the server itself (apikeys.serving).

``echo``: answers the WSGI environ the server built, as JSON. ``GET /sleep?seconds=N``
sleeps first. ``impatient``: the same behind an adapter with one thread, and a request
deadline and a body timeout of ``IMPATIENT_TIMEOUT`` seconds, so that a test can pass them
quickly; it writes the service's request lines for the adapter's own answers.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from apikeys import logs
from apikeys.serving import Adapter

IMPATIENT_TIMEOUT = 1.0
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
    if environ["PATH_INFO"] == "/sleep":
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
        echo_app, threads=1, request_timeout=IMPATIENT_TIMEOUT, body_timeout=IMPATIENT_TIMEOUT
    )
