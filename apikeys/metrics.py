"""Prometheus metrics: what an operator alerts on, summed over the instance's workers.

Under ``serve.py`` each worker writes its values to files of its own in
``PROMETHEUS_MULTIPROC_DIR``, a directory that the master gives the instance before any
worker starts (``multiprocess_directory``), and a scrape, whichever worker it reaches,
sums every worker's files (prometheus_client's ``MultiProcessCollector``). A worker that
dies leaves its files behind, so its counts stay in the sums: no counter goes down when
granian respawns a worker. Without the variable (``flask run``, the tests) a scrape shows
the process's own values.

prometheus_client decides where values live when it is first imported, from that
variable. serve.py's master imports this module (the modules that count import it)
before it sets the variable, and granian forks the workers from it: so prometheus_client
is imported only where the metrics are first built, in the process that counts.

Label values are bounded whatever a client sends: a route is the URL rule that matched
(``/api/v1/org/api-keys/<key_id>``), never the path; a method outside ``METHODS`` is
``other``. The children each request increments are looked up once per label set and
kept (``children``).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from flask import Flask, Response, g, request

from apikeys.process import process_id

#: The variable that puts prometheus_client in multiprocess mode: its files' directory.
DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
#: The route of a request no URL rule matched (an unknown path, or a method the path lacks).
UNMATCHED = "unmatched"
#: The route of what apikeys.serving answers itself before the app could (408, 413, 431,
#: a body cut short, the deadline's 503).
UNROUTED = "unrouted"
#: The check's endpoint, whose answers are also counted by outcome.
CHECK_ENDPOINT = "check.check"
OUTCOMES = ("allowed", "unauthorized", "forbidden", "rate_limited", "invalid_request", "error")
BUDGETS = ("key", "address")
#: Seconds. A check takes about a millisecond; apikeys.serving's deadline is 15 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
#: Set in a request's environ by apikeys.serving when it answered the request itself after
#: the deadline: the app's own answer, if it ever comes, reaches no one and is not counted.
ABANDONED = "apikeys.abandoned"

#: What the storage may say while limits are still counted where they should be.
_UP = ("ok", "not configured", "disabled")
_OUTCOME_OF_STATUS = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}


class _Instruments:
    """The service's metrics in this process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, values

        self.multiprocess = DIRECTORY in os.environ
        if self.multiprocess:
            # Each write checks that the process is still the one whose file it writes to;
            # asked of os.getpid(), that is a system call per value, four per request.
            values.ValueClass = values.MultiProcessValue(process_identifier=process_id)
        self.requests = Counter(
            "apikeys_http_requests",
            "HTTP requests answered, by method, route (the URL rule) and status.",
            ("method", "route", "status"),
            registry=None,
        )
        self.duration = Histogram(
            "apikeys_http_request_duration_seconds",
            "Time the app took to answer a request, by route.",
            ("route",),
            buckets=BUCKETS,
            registry=None,
        )
        self.checks = Counter(
            "apikeys_checks",
            "Answers of /api/v1/auth/check, by outcome.",
            ("outcome",),
            registry=None,
        )
        self.rejections = Counter(
            "apikeys_ratelimit_rejections",
            "Requests refused with 429, by the budget spent: the key's or the address's.",
            ("budget",),
            registry=None,
        )
        self.fallbacks = Counter(
            "apikeys_ratelimit_fallbacks",
            "Times a worker lost Redis and began counting rate limits in its own memory.",
            registry=None,
        )
        self.last_used_writes = Counter(
            "apikeys_last_used_writes",
            "Writes of a key's last_used_at to the database.",
            registry=None,
        )
        # Every value known up front is shown from the start, at 0: a series that appears
        # at its first increment hides that increment from rate() and increase().
        self.outcomes = {outcome: self.checks.labels(outcome) for outcome in OUTCOMES}
        self.budgets = {budget: self.rejections.labels(budget) for budget in BUDGETS}
        self.all = (
            self.requests,
            self.duration,
            self.checks,
            self.rejections,
            self.fallbacks,
            self.last_used_writes,
        )


@functools.cache
def children(method: str, route: str, endpoint: str | None, status: int) -> tuple[Any, Any, Any]:
    """The request counter's, the duration's and (for the check) the outcome's child for
    one answer, looked up once per label set and kept: ``method`` is one of METHODS or
    OTHER_METHOD, ``route`` the URL rule or UNMATCHED, so what is kept is bounded."""
    instruments = _instruments()
    outcome = instruments.outcomes[_outcome(status)] if endpoint == CHECK_ENDPOINT else None
    return (
        instruments.requests.labels(method, route, str(status)),
        instruments.duration.labels(route),
        outcome,
    )


def _method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def _outcome(status: int) -> str:
    if status < 300:
        return "allowed"
    if status >= 500:
        return "error"
    return _OUTCOME_OF_STATUS.get(status, "invalid_request")


@functools.cache
def _instruments() -> _Instruments:
    return _Instruments()


def count_rejection(budget: str) -> None:
    """A request refused by its ``budget``'s limit ("key" or "address")."""
    _instruments().budgets[budget].inc()


def count_fallback() -> None:
    """This worker lost Redis and counts rate limits in its own memory from now on."""
    _instruments().fallbacks.inc()


def count_last_used_write() -> None:
    """A key's last_used_at was written."""
    _instruments().last_used_writes.inc()


def count_own_answer(method: str, route: str, status: int, started: float) -> None:
    """An answer apikeys.serving gave itself, begun at ``started`` (time.perf_counter)."""
    counted, duration, _ = children(_method_label(method), route, None, status)
    counted.inc()
    duration.observe(time.perf_counter() - started)


def _count_response(response: Response) -> Response:
    """Count the app's answer to this request; an after_request hook, registered after
    logs' so that it runs before it, with the status that leaves."""
    # Once: the proxy looks its object up again on each use.
    current = cast(Any, request)._get_current_object()
    if ABANDONED not in current.environ:
        method, rule = current.method, current.url_rule
        counted, duration, outcome = children(
            _method_label(method),
            UNMATCHED if rule is None else rule.rule,
            None if rule is None else rule.endpoint,
            response.status_code,
        )
        counted.inc()
        # When logs began the request: its first hook.
        duration.observe(time.perf_counter() - g.request_started)
        if outcome is not None:
            outcome.inc()
    return response


class _StorageUp:
    """apikeys_ratelimit_storage_up, asked at each scrape in the worker scraped: a gauge
    cannot be computed at scrape time from multiprocess files (no set_function)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from apikeys import ratelimit  # here: ratelimit's own imports count into this module

        yield GaugeMetricFamily(
            "apikeys_ratelimit_storage_up",
            "Whether the rate-limit storage (Redis) takes writes; 0 means in-process "
            "fallback limits.",
            value=float(ratelimit.storage_state(self.app) in _UP),
        )


def init_app(app: Flask) -> None:
    """Count ``app``'s requests and serve the metrics at ``exposition``. Call it after
    logs.init_app, whose hooks time the request."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    instruments = _instruments()
    registry = CollectorRegistry()
    if instruments.multiprocess:
        MultiProcessCollector(registry)
    else:
        for metric in instruments.all:
            registry.register(metric)
    registry.register(_StorageUp(app))
    app.extensions["apikeys.metrics"] = registry
    app.after_request(_count_response)


def exposition(app: Flask) -> Response:
    """The app's metrics in Prometheus' text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(
        generate_latest(app.extensions["apikeys.metrics"]), content_type=CONTENT_TYPE_LATEST
    )


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """Set PROMETHEUS_MULTIPROC_DIR for the workers this process starts, for as long as
    they run: the operator's, emptied of the last run's files, or else a fresh private
    directory, removed on exit. One directory per instance: files are named by pid.

    Enter it before any worker starts, in a process that has not imported
    prometheus_client: granian forks the workers, which inherit its choice.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError(f"prometheus_client was imported before {DIRECTORY} was set")
    given = os.environ.get(DIRECTORY)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield given
        return
    made = tempfile.mkdtemp(prefix="apikeys-metrics-")
    os.environ[DIRECTORY] = made
    try:
        yield made
    finally:
        os.environ.pop(DIRECTORY, None)
        shutil.rmtree(made, ignore_errors=True)
