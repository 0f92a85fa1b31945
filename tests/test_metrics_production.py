"""/metrics under serve.py with two workers: a scrape reaches one worker, and shows the sum
over both, a respawned worker's predecessor included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apikeys import crypto
from tests.conftest import REDIS_URL, bearer
from tests.servers import (
    ROOT,
    START_TIMEOUT,
    Reply,
    Server,
    production,
    send,
    wait_for_workers,
)
from tests.wsgi_apps import IMPATIENT_TIMEOUT

WORKERS = 2
CHECK = "/api/v1/auth/check"
#: Requests go in rounds of parallel fresh connections until every worker has served
#: some; the cap only bounds a broken server.
ROUND, MAX_REQUESTS = 8, 400

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
def secret():
    return crypto.generate_secret()


@pytest.fixture
def env(tmp_path, redis_client, secret):
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": secret,
        # The server's counters have no per-test prefix: keep clear of other users' budgets.
        "RATE_LIMIT_PER_KEY": "100000/minute",
    }


def on_every_worker(server: Server, send_one) -> list[Reply]:
    """Requests (``send_one()``) over fresh connections until every worker has answered."""
    replies, workers = server.until_every_worker(send_one, WORKERS, ROUND, MAX_REQUESTS)
    assert len(workers) == WORKERS, server.log()
    return replies


def parsed(body: bytes) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def scrapes_of_every_worker(server: Server) -> list[Samples]:
    """Scrapes, one after another, until every worker has answered one; in order."""
    replies: list[Reply] = []
    workers: set[int] = set()
    while len(workers) < WORKERS and len(replies) < MAX_REQUESTS:
        reply = server.request("GET", "/metrics")
        assert reply.status == 200
        replies.append(reply)
        workers |= set(server.workers_of([reply]).values())
    assert len(workers) == WORKERS, server.log()
    return [parsed(reply.body) for reply in replies]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def allowed(samples: Samples) -> float:
    return value(samples, "apikeys_checks_total", outcome="allowed")


def check_requests(samples: Samples) -> float:
    return value(samples, "apikeys_http_requests_total", method="GET", route=CHECK, status="200")


def test_every_scrape_shows_the_sum_over_both_workers(tmp_path, env, secret):
    headers = {**bearer(secret), "X-Required-Scope": "read:billing"}
    with production(tmp_path, env, workers=WORKERS) as server:
        checks = on_every_worker(server, lambda: server.request("GET", CHECK, headers))
        assert {reply.status for reply in checks} == {200}
        scrapes = scrapes_of_every_worker(server)
        for earlier, samples in enumerate(scrapes):
            assert allowed(samples) == len(checks)
            assert check_requests(samples) == len(checks)
            timed = value(samples, "apikeys_http_request_duration_seconds_count", route=CHECK)
            assert timed == len(checks)
            # Each scrape counts the ones before it, whichever worker answered them.
            scraped = value(
                samples, "apikeys_http_requests_total", method="GET", route="/metrics", status="200"
            )
            assert scraped == earlier
            assert value(samples, "apikeys_ratelimit_storage_up") == 1.0


def test_the_servers_own_answers_are_counted_with_bounded_labels(tmp_path, env):
    with production(tmp_path, env, workers=WORKERS) as server:
        too_large = {"Content-Length": str(10**9)}
        for method in ("POST", "BREW", "PUT"):
            assert send(server.port, method, "/api/v1/org/api-keys", too_large).status == 413
        assert send(server.port, "GET", "/healthz").status == 200
        samples = parsed(server.request("GET", "/metrics").body)
    requests = {
        labels: count
        for (name, labels), count in samples.items()
        if name == "apikeys_http_requests_total"
    }
    unrouted = frozenset({("route", "unrouted"), ("status", "413")})
    assert requests[unrouted | {("method", "POST")}] == 1
    assert requests[unrouted | {("method", "PUT")}] == 1
    assert requests[unrouted | {("method", "other")}] == 1
    # The readiness probe (and the start-up's) answered on the event loop, counted alike.
    healthz = frozenset({("method", "GET"), ("route", "/healthz"), ("status", "200")})
    assert requests[healthz] >= 1
    assert not [labels for labels in requests if ("method", "BREW") in labels]


def test_an_answer_past_the_deadline_is_counted_once_as_the_503_sent(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}"}
    with production(tmp_path, env, workers=1, target="tests.wsgi_apps:impatient_service") as server:
        assert send(server.port, "GET", f"/sleep?seconds={IMPATIENT_TIMEOUT + 1}").status == 503
        # The app's own answer comes a second later, to no one.
        time.sleep(1.5)
        samples = parsed(send(server.port, "GET", "/metrics").body)
    requests = {
        dict(labels)["route"]: (dict(labels)["status"], count)
        for (name, labels), count in samples.items()
        if name == "apikeys_http_requests_total" and ("method", "GET") in labels
    }
    assert requests["unrouted"] == ("503", 1)
    assert "/sleep" not in requests


def test_a_killed_and_respawned_worker_takes_nothing_from_the_counts(tmp_path, env, secret):
    headers = {**bearer(secret), "X-Required-Scope": "read:billing"}
    with production(tmp_path, env, workers=WORKERS) as server:
        checks = on_every_worker(server, lambda: server.request("GET", CHECK, headers))
        before = scrapes_of_every_worker(server)[-1]
        assert allowed(before) == len(checks)
        workers = server.worker_pids()
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT
        while len(server.worker_pids() - {victim}) < WORKERS:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert "Respawning worker" in server.log()
        # The new worker answers scrapes too, with the dead one's counts in the sum.
        for samples in scrapes_of_every_worker(server):
            assert allowed(samples) == len(checks)
            assert check_requests(samples) == len(checks)
        more = on_every_worker(server, lambda: server.request("GET", CHECK, headers))
        for samples in scrapes_of_every_worker(server):
            assert allowed(samples) == len(checks) + len(more)


def test_a_temporary_metrics_directory_lives_as_long_as_the_server(tmp_path, env, secret):
    with production(tmp_path, env, workers=WORKERS) as server:
        # granian stops slowly (past the test's grace) while a worker is still starting.
        wait_for_workers(server, WORKERS)
        server.request("GET", CHECK, {**bearer(secret), "X-Required-Scope": "read:billing"})
        (directory,) = tmp_path.glob("apikeys-metrics-*")
        assert list(directory.glob("*.db"))
    assert not directory.exists()


def test_an_operators_metrics_directory_is_emptied_at_start_and_kept(tmp_path, env):
    directory = tmp_path / "metrics"
    # A previous run's counts, written by prometheus_client itself.
    stale = (
        "from prometheus_client import Counter\n"
        "Counter('apikeys_checks', '', ['outcome']).labels('allowed').inc(1000)\n"
    )
    directory.mkdir()
    subprocess.run(
        [sys.executable, "-c", stale],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
    )
    assert list(directory.glob("*.db"))
    with production(tmp_path, {**env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}) as server:
        assert allowed(parsed(server.request("GET", "/metrics").body)) == 0
    assert directory.is_dir()
    assert not list(tmp_path.glob("apikeys-metrics-*"))


def test_serve_imports_no_prometheus_client_before_it_sets_the_directory():
    # granian forks the workers from serve.py's process: prometheus_client, imported there
    # before the variable is set, would keep every worker's values in its own memory.
    probe = "import serve, sys; print('prometheus_client' in sys.modules)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert imported.stdout.strip() == "False"
