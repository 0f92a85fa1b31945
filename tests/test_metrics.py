"""/metrics in one process: each metric counts what it says, with labels a client cannot
multiply. The counts are the process's, shared by every app of the test run: each test
compares a scrape after with one before."""

from __future__ import annotations

import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apikeys import crypto, metrics
from app import create_app
from tests.conftest import bearer, prepared

CHECK = "/api/v1/auth/check"
KEYS = "/api/v1/org/api-keys"

Samples = dict[tuple[str, frozenset], float]


def scrape(client) -> Samples:
    """Every sample of /metrics, by name and labels, read by prometheus_client's parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def change(before: Samples, after: Samples, name: str) -> dict[frozenset, float]:
    """What each labelled sample of ``name`` gained, where it gained anything."""
    gained = {}
    for (sample, labels), value in after.items():
        if sample == name and value != before.get((sample, labels), 0.0):
            gained[labels] = value - before.get((sample, labels), 0.0)
    return gained


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


def check(client, secret: str | None, scope: str | None = "read:billing"):
    headers = bearer(secret) if secret else {}
    if scope:
        headers["X-Required-Scope"] = scope
    return client.get(CHECK, headers=headers)


def test_requests_are_counted_and_timed_by_url_rule_method_and_status(client, make_key):
    key = make_key()
    before = scrape(client)
    for _ in range(2):
        assert client.get(f"{KEYS}/{key.id}", headers=bearer(key.key)).status_code == 200
    assert client.delete(f"{KEYS}/nope", headers=bearer(key.key)).status_code == 404
    after = scrape(client)
    rule = "/api/v1/org/api-keys/<key_id>"
    assert change(before, after, "apikeys_http_requests_total") == {
        labels(method="GET", route=rule, status="200"): 2,
        labels(method="DELETE", route=rule, status="404"): 1,
        # The scrape before this one, counted once it was answered.
        labels(method="GET", route="/metrics", status="200"): 1,
    }
    timed = change(before, after, "apikeys_http_request_duration_seconds_count")
    assert timed == {labels(route=rule): 3, labels(route="/metrics"): 1}
    # Each duration is in a bucket: the largest finite one holds all three.
    buckets = change(before, after, "apikeys_http_request_duration_seconds_bucket")
    assert buckets[labels(route=rule, le=str(metrics.BUCKETS[-1]))] == 3


def test_every_check_answer_is_counted_under_exactly_one_outcome(settings, make_key):
    settings["RATE_LIMIT_PER_KEY"] = "2/minute"
    settings["RATE_LIMIT_FAILED_AUTH"] = "2/minute"
    app = prepared(create_app(settings))
    client = app.test_client()
    full, billing_only = make_key(), make_key(key_scopes=["read:billing"])
    before = scrape(client)
    statuses = [
        check(client, full.key).status_code,  # allowed
        check(client, billing_only.key, "read:analytics").status_code,  # forbidden
        check(client, billing_only.key, None).status_code,  # nothing to check: invalid
        check(client, full.key).status_code,  # allowed: the key's second of 2
        check(client, full.key).status_code,  # the key's budget is spent
        check(client, None).status_code,  # unauthorized
        check(client, crypto.generate_secret()).status_code,  # unauthorized
        check(client, None).status_code,  # the address's budget is spent
    ]
    assert statuses == [200, 403, 400, 200, 429, 401, 401, 429]
    after = scrape(client)
    assert change(before, after, "apikeys_checks_total") == {
        labels(outcome="allowed"): 2,
        labels(outcome="forbidden"): 1,
        labels(outcome="invalid_request"): 1,
        labels(outcome="rate_limited"): 2,
        labels(outcome="unauthorized"): 2,
    }
    assert change(before, after, "apikeys_ratelimit_rejections_total") == {
        labels(budget="key"): 1,
        labels(budget="address"): 1,
    }


def test_every_outcome_and_budget_is_shown_before_it_first_happens(client):
    shown = scrape(client)
    for outcome in metrics.OUTCOMES:
        assert ("apikeys_checks_total", labels(outcome=outcome)) in shown
    for budget in metrics.BUDGETS:
        assert ("apikeys_ratelimit_rejections_total", labels(budget=budget)) in shown


def test_rate_limit_rejections_on_the_api_are_counted_by_budget(settings, make_key):
    settings["RATE_LIMIT_PER_KEY"] = "1/minute"
    client = prepared(create_app(settings)).test_client()
    key = make_key()
    before = scrape(client)
    assert [client.get(KEYS, headers=bearer(key.key)).status_code for _ in range(3)] == [
        200,
        429,
        429,
    ]
    after = scrape(client)
    assert change(before, after, "apikeys_ratelimit_rejections_total") == {labels(budget="key"): 2}
    # Not a check: no outcome counted.
    assert change(before, after, "apikeys_checks_total") == {}


def test_last_used_writes_are_counted_once_per_interval(client, make_key):
    key = make_key()
    before = scrape(client)
    for _ in range(3):
        assert check(client, key.key).status_code == 200
    middle = scrape(client)
    assert change(before, middle, "apikeys_last_used_writes_total") == {labels(): 1}
    assert check(client, make_key().key).status_code == 200
    assert change(middle, scrape(client), "apikeys_last_used_writes_total") == {labels(): 1}


def test_losing_redis_counts_one_fallback_per_outage(own_redis, app, make_key):
    client = app.test_client()
    key = make_key()
    assert client.get(KEYS, headers=bearer(key.key)).status_code == 200
    before = scrape(client)
    own_redis.kill()
    own_redis.wait()
    # Still served, limits in memory: the first failure falls back, and the others (each
    # route's request asks Redis while it answers) go on in memory.
    assert [client.get(KEYS, headers=bearer(key.key)).status_code for _ in range(3)] == [200] * 3
    assert check(client, key.key).status_code == 200
    after = scrape(client)
    assert change(before, after, "apikeys_ratelimit_fallbacks_total") == {labels(): 1}


def test_a_client_cannot_multiply_label_values_with_paths_or_methods(client, make_key):
    key = make_key()
    before = scrape(client)
    paths = [f"/{secrets.token_hex(6)}/{n}" for n in range(20)]
    for path in paths:
        assert client.get(path, headers=bearer(key.key)).status_code == 404
    methods = [secrets.token_hex(3).upper() for _ in range(20)]
    for method in methods:
        assert client.open(f"{KEYS}/{key.id}", method=method).status_code == 405
        assert client.open(CHECK, method=method).status_code == 405
    response = client.get("/metrics")
    after = scrape(client)
    assert change(before, after, "apikeys_http_requests_total") == {
        labels(method="GET", route=metrics.UNMATCHED, status="404"): 20,
        labels(method=metrics.OTHER_METHOD, route=metrics.UNMATCHED, status="405"): 40,
        labels(method="GET", route="/metrics", status="200"): 2,
    }
    text = response.get_data(as_text=True)
    assert not [sent for sent in paths + methods if sent.lower() in text.lower()]
    # A wrong method on the check's path is no check: its view never ran.
    assert change(before, after, "apikeys_checks_total") == {}


def test_what_is_kept_per_request_does_not_grow_with_paths_or_methods(client, make_key):
    key = make_key()
    client.get("/unknown", headers=bearer(key.key))
    client.open(KEYS, method="BREW")
    kept = metrics.children.cache_info().currsize
    for _ in range(20):
        client.get(f"/{secrets.token_hex(6)}", headers=bearer(key.key))
        client.open(KEYS, method=secrets.token_hex(3).upper())
    assert metrics.children.cache_info().currsize == kept


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_metrics_are_served_as_prometheus_text(client, method):
    response = client.open("/metrics", method=method)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
