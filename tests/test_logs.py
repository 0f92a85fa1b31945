"""Request ids and log lines, through the test client: what stderr receives, line by line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator

import pytest

from apikeys import crypto, logs, service
from apikeys.config import ConfigError, from_environment
from apikeys.repeated_warnings import Throttled
from app import create_app
from tests.conftest import bearer, prepared

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
CHECK = "/api/v1/auth/check"
TARGET = {"X-Required-Scope": "read:charge_points"}


@pytest.fixture
def lines(capsys):
    """The JSON lines written to stderr since the last call."""

    def read() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    read()
    return read


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "apikeys.request"]


@pytest.fixture
def boom(app):
    def explode():
        raise RuntimeError("a bug")

    app.add_url_rule("/boom", "boom", explode)
    return "/boom"


@pytest.mark.parametrize("request_id", ["a", "req-42_A.b", "x" * 128, "0" * 32])
def test_a_well_formed_request_id_is_kept(client, request_id):
    response = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id


@pytest.mark.parametrize(
    "request_id",
    [
        "",
        "x" * 129,
        "two words",
        "a/b",
        "a,b",
        "caf\u00e9",
        "id;drop",
        # A key where an id goes would be written to the log: it is never kept.
        "evk_" + "A" * 38,
        "req-EVK_abc",
    ],
)
def test_any_other_request_id_is_replaced_by_a_generated_one(client, request_id):
    response = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


def test_each_request_without_an_id_gets_its_own(client):
    first, second = (client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert GENERATED_ID.fullmatch(first) and GENERATED_ID.fullmatch(second)
    assert first != second


def test_the_request_id_is_known_during_the_request(app, client):
    seen = []
    app.add_url_rule("/seen", "seen", lambda: seen.append(logs.request_id()) or "")
    response = client.get("/seen", headers={"X-Request-ID": "during-1"})
    assert seen == ["during-1"] == [response.headers["X-Request-ID"]]


def test_every_response_carries_its_request_id_and_gets_one_line(
    app, client, admin, make_key, boom, lines
):
    oversized = client.post(
        "/api/v1/org/api-keys", data=b"x" * (65 * 1024), headers=bearer(admin.key)
    )
    assert oversized.status_code == 413
    assert GENERATED_ID.fullmatch(oversized.headers["X-Request-ID"])

    # A key of its own limit: the admin's budget, counted per window, is left as it is.
    limited = service.create_key(
        admin.organization_id,
        "limited",
        ["read:charge_points"],
        rate_limit="2/minute",
        rate_limit_cap="2/minute",
    )
    requests = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/api/docs", {}, 200),
        ("GET", "/api/openapi.json", {}, 200),
        ("GET", CHECK, {**TARGET, **bearer(admin.key)}, 200),
        ("GET", CHECK, TARGET, 401),
        ("GET", CHECK, {"X-Required-Scope": "bogus", **bearer(admin.key)}, 400),
        ("GET", "/nope", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        ("GET", boom, {}, 500),
        ("GET", CHECK, {**TARGET, **bearer(limited.key)}, 200),
        ("GET", CHECK, {**TARGET, **bearer(limited.key)}, 200),
        ("GET", CHECK, {**TARGET, **bearer(limited.key)}, 429),
    ]
    for number, (method, path, headers, status) in enumerate(requests):
        request_id = f"case-{number}"
        response = client.open(path, method=method, headers={**headers, "X-Request-ID": request_id})
        assert response.status_code == status, (path, response.get_data(as_text=True))
        assert response.headers["X-Request-ID"] == request_id
    logged = request_lines(lines())
    expected = [(oversized.headers["X-Request-ID"], "POST", "/api/v1/org/api-keys", 413)]
    expected += [(f"case-{n}", m, p, s) for n, (m, p, _, s) in enumerate(requests)]
    assert [
        (line["request_id"], line["method"], line["path"], line["status"]) for line in logged
    ] == expected


def test_a_request_line_has_every_field(client, admin, lines):
    client.get(CHECK + "?debug=1&x=2", headers={**TARGET, **bearer(admin.key)})
    client.get(CHECK + "?debug=1", headers=TARGET)
    authenticated, anonymous = request_lines(lines())
    assert RFC3339_UTC.fullmatch(authenticated.pop("time"))
    assert authenticated.pop("request_id")
    duration = authenticated.pop("duration_ms")
    assert isinstance(duration, float) and duration >= 0
    assert authenticated == {
        "level": "INFO",
        "logger": "apikeys.request",
        "message": f"GET {CHECK} 200",
        "method": "GET",
        "path": CHECK,
        "status": 200,
        "remote_addr": "127.0.0.1",
        "pid": os.getpid(),
        "key_id": admin.id,
        "org_id": admin.organization_id,
    }
    assert anonymous["status"] == 401 and anonymous["path"] == CHECK
    assert "key_id" not in anonymous and "org_id" not in anonymous


@contextlib.contextmanager
def served_alone(*others: logging.Handler) -> Iterator[None]:
    """The root logger with the service's handler alone (and ``others``), as under
    serve.py: pytest's own handlers, added for each test's call, take request lines
    through the logging module."""
    root = logging.getLogger()
    kept = root.handlers
    root.handlers = [*(h for h in kept if isinstance(h, logs.StderrHandler)), *others]
    try:
        yield
    finally:
        root.handlers = kept


def test_a_request_line_is_the_same_written_straight_or_through_logging(client, admin, lines):
    headers = {**TARGET, **bearer(admin.key), "X-Request-ID": "same-1"}
    with served_alone():
        assert logs.request_line_handler() is not None
        client.get(CHECK, headers=headers)
    with served_alone(logging.NullHandler()):
        assert logs.request_line_handler() is None
        client.get(CHECK, headers=headers)
    straight, through = request_lines(lines())
    for line in (straight, through):
        assert RFC3339_UTC.fullmatch(line.pop("time"))
        assert line.pop("duration_ms") >= 0
    assert straight == through and list(straight) == list(through)
    assert straight["key_id"] == admin.id


def test_another_line_on_the_request_logger_keeps_its_own_level(settings, lines):
    create_app(settings)
    lines()
    logging.getLogger("apikeys.request").warning("not a request line: %s", "odd")
    (line,) = lines()
    assert (line["level"], line["message"]) == ("WARNING", "not a request line: odd")


def test_an_operators_handler_sees_every_request_line(client, lines):
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    requests = logging.getLogger("apikeys.request")
    requests.addHandler(collect := Collect())
    try:
        with served_alone():
            client.get("/healthz")
    finally:
        requests.removeHandler(collect)
    assert seen == ["GET /healthz 200"]
    assert [line["message"] for line in request_lines(lines())] == ["GET /healthz 200"]


def test_a_key_without_its_prefix_is_masked_in_the_path_and_never_kept_as_an_id(
    client, admin, lines
):
    bare = crypto.generate_secret()[len(crypto.PREFIX) :]
    client.get(f"/api/v1/org/api-keys/x{bare}y", headers=bearer(admin.key))
    client.get("/healthz", headers={"X-Request-ID": bare})
    keyed, health = request_lines(lines())
    assert keyed["path"] == "/api/v1/org/api-keys/x[redacted]y"
    assert bare not in json.dumps(keyed)
    assert GENERATED_ID.fullmatch(health["request_id"])


def test_remote_addr_is_the_client_behind_a_trusted_proxy(settings, lines):
    app = create_app(settings | {"APIKEYS_TRUSTED_PROXIES": 1})
    app.test_client().get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    (line,) = request_lines(lines())
    assert line["remote_addr"] == "203.0.113.9"


def test_an_uncaught_exception_logs_its_error_then_its_500_line_with_the_request_id(
    client, boom, lines
):
    client.get(boom, headers={"X-Request-ID": "boom-1"})
    error, request = lines()
    assert error["level"] == "ERROR" and error["logger"] == "apikeys.errors"
    assert error["request_id"] == "boom-1"
    assert "RuntimeError: a bug" in error["exc_info"]
    assert (request["status"], request["request_id"]) == (500, "boom-1")


def test_other_lines_share_the_format(settings, lines):
    prepared(create_app(settings))
    migrations = lines()
    assert migrations and all(RFC3339_UTC.fullmatch(line.pop("time")) for line in migrations)
    assert migrations[0] == {
        "level": "INFO",
        "logger": "peewee.migrations",
        "message": "up: 0001_initial",
    }
    assert all(line["logger"] == "peewee.migrations" for line in migrations)
    logging.getLogger("apikeys.somewhere").warning("outside any request: %s", "no id")
    (warning,) = lines()
    assert warning["message"] == "outside any request: no id" and "request_id" not in warning


def test_the_text_format(settings, admin, capsys):
    app = prepared(create_app(settings | {"LOG_FORMAT": "text"}))
    capsys.readouterr()
    app.test_client().get(
        CHECK + "?q=1", headers={**TARGET, **bearer(admin.key), "X-Request-ID": "t-1"}
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert re.fullmatch(
        rf"{RFC3339_UTC.pattern} INFO apikeys\.request GET {CHECK} 200 request_id=t-1 "
        rf"duration_ms=[0-9.]+ remote_addr=127\.0\.0\.1 key_id={admin.id} "
        rf"org_id={admin.organization_id}",
        line,
    )


def test_log_level_warning_drops_request_lines_but_not_errors(settings, lines):
    app = create_app(settings | {"LOG_LEVEL": "WARNING"})
    app.add_url_rule("/boom", "boom", lambda: 1 / 0)
    app.test_client().get("/healthz")
    app.test_client().get("/boom")
    (error,) = lines()
    assert error["level"] == "ERROR" and "ZeroDivisionError" in error["exc_info"]


def test_create_app_twice_still_writes_each_line_once(settings, lines):
    create_app(settings)
    app = create_app(settings)
    lines()
    app.test_client().get("/healthz")
    assert len(lines()) == 1
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs.StderrHandler)]
    assert len(ours) == 1


@pytest.mark.parametrize(
    ("name", "value"), [("LOG_FORMAT", "xml"), ("LOG_FORMAT", ""), ("LOG_LEVEL", "loud")]
)
def test_a_bad_log_setting_stops_the_service_naming_it(settings, name, value):
    with pytest.raises(ConfigError, match=name):
        create_app(settings | {name: value})


def test_log_settings_from_the_environment():
    assert from_environment({})["LOG_FORMAT"] == "json"
    assert from_environment({})["LOG_LEVEL"] == "INFO"
    chosen = from_environment({"LOG_FORMAT": " Text ", "LOG_LEVEL": "debug"})
    assert (chosen["LOG_FORMAT"], chosen["LOG_LEVEL"]) == ("text", "DEBUG")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/api/v1/auth/check", "/api/v1/auth/check"),
        ("/api/v1/org/api-keys/evk_abc/x", "/api/v1/org/api-keys/[redacted]/x"),
        ("/EVK_ABC", "/[redacted]"),
        ("/a-evk_b/evk_c?d", "/a-[redacted]/[redacted]?d"),
        ('{"path": "evk_x1", "b": "evk_"}', '{"path": "[redacted]", "b": "[redacted]"}'),
        ("GET", "GET"),
    ],
)
def test_masked(text, shown):
    assert crypto.masked(text) == shown


def test_a_throttled_warning_is_written_once_per_interval_with_the_count_held_back(caplog):
    warning = Throttled(logging.getLogger("apikeys.test"), seconds=0.3)
    for number in range(3):
        warning.warning("database unavailable: %s", number)
    time.sleep(0.05)
    assert [record.getMessage() for record in caplog.records] == ["database unavailable: 0"]
    time.sleep(0.35)
    warning.warning("database unavailable: %s", 3)
    # The interval's end writes what it held back, though no warning came after it.
    assert [record.getMessage() for record in caplog.records] == [
        "database unavailable: 0",
        "database unavailable: 2 (and 1 more like it since the last such line)",
    ]
    time.sleep(0.4)
    assert caplog.records[-1].getMessage() == "database unavailable: 3"
    assert len(caplog.records) == 3


def test_the_last_warnings_of_an_outage_are_counted_when_it_ends(caplog):
    warning = Throttled(logging.getLogger("apikeys.test"), seconds=0.2)
    for number in range(5):
        warning.warning("database unavailable: %s", number)
    time.sleep(0.5)  # the outage is over: no warning comes after these
    assert [record.getMessage() for record in caplog.records] == [
        "database unavailable: 0",
        "database unavailable: 4 (and 3 more like it since the last such line)",
    ]
