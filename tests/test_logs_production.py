"""The production server's log: keys sent everywhere a client can put them, none written."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import pytest

from apikeys.crypto import generate_secret, masked
from apikeys.serving import MAX_HEADER_BYTES
from tests.servers import Answer, production, send
from tests.wsgi_apps import IMPATIENT_TIMEOUT

REQUIRED = {"time", "level", "request_id", "method", "path", "status", "duration_ms"}
CHECK = "/api/v1/auth/check"
KEYS = "/api/v1/org/api-keys"


def created(server, admin: str, name: str) -> dict:
    reply = server.request(
        "POST",
        KEYS,
        {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
        json.dumps({"name": name, "scopes": ["read:charge_points"]}).encode(),
    )
    assert reply.status == 201, reply.body
    return json.loads(reply.body)


def placements(secret: str, admin: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    """Every place a client can put ``secret``: (method, path, headers, body)."""
    target = {"X-Required-Scope": "read:charge_points"}
    body = json.dumps({"name": secret, "scopes": [secret], "key": secret}).encode()
    as_admin = {"Authorization": f"Bearer {admin}"}
    return [
        ("GET", CHECK, {"Authorization": f"Bearer {secret}", **target}, b""),
        ("GET", CHECK, {"X-API-Key": secret, **target}, b""),
        ("GET", CHECK, {"Authorization": f"Basic {secret}", **target}, b""),
        ("GET", KEYS, {"Authorization": f"Bearer {secret}"}, b""),
        ("GET", f"{CHECK}?api_key={secret}&key={secret}", target, b""),
        ("POST", KEYS, {**as_admin, "Content-Type": "application/json"}, body),
        ("POST", KEYS, {"X-API-Key": secret, "Content-Type": "application/json"}, body),
        ("GET", f"{KEYS}/{secret}", as_admin, b""),
        ("DELETE", f"{KEYS}/{secret}", as_admin, b""),
        ("GET", f"/{secret}", {}, b""),
        # A line break in the path must not start a line of the client's in the log.
        ("GET", f"/%0a%7b%22level%22:%22ERROR%22%7d/{secret}", {}, b""),
        ("GET", f"{CHECK}/{secret}?{secret}", {}, b""),
        (
            "GET",
            CHECK,
            {
                **as_admin,
                "X-Request-ID": secret,
                "X-Forwarded-For": secret,
                "X-Original-Method": "GET",
                "X-Original-URI": f"/charge-points?key={secret}",
                "X-Required-Scope": secret,
                "Cookie": f"session={secret}",
                "User-Agent": secret,
                "Referer": f"https://example.test/?key={secret}",
                "X-Custom-Token": secret,
            },
            b"",
        ),
        (secret, "/healthz", {}, b""),
    ]


def test_no_key_reaches_the_log_and_every_line_is_json(tmp_path):
    admin = generate_secret()
    database = tmp_path / "apikeys.db"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "APIKEYS_BOOTSTRAP_KEY": admin,
        # X-Forwarded-For is then believed: what a client writes there is what is logged.
        "APIKEYS_TRUSTED_PROXIES": "1",
        # Every library's lines too, peewee's queries included.
        "LOG_LEVEL": "DEBUG",
    }
    with production(tmp_path, env) as server:
        valid = created(server, admin, "valid")["key"]
        revoked = created(server, admin, "revoked")
        reply = server.request(
            "DELETE", f"{KEYS}/{revoked['id']}", {"Authorization": f"Bearer {admin}"}
        )
        assert reply.status == 204
        secrets = {
            "the bootstrap key": admin,
            "a valid key": valid,
            "a revoked key": revoked["key"],
            "an unknown well-formed key": generate_secret(),
            "a key with a wrong checksum": valid[:-1] + ("A" if valid[-1] != "A" else "B"),
            "a key cut short": valid[:20],
            "a key with more after it": valid + "Zz9",
        }
        statuses = set()
        for secret in secrets.values():
            for method, path, headers, body in placements(secret, admin):
                statuses.add(server.request(method, path, headers, body).status)

        # A database failure (the table the check reads is gone): 503, logged with its id.
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE api_key RENAME TO api_key_gone")
        failed = [
            server.request(
                "GET",
                f"{CHECK}?key={secret}",
                {"Authorization": f"Bearer {secret}", "X-Request-ID": f"broken-{number}"},
            )
            for number, secret in enumerate([generate_secret(), generate_secret()])
        ]
        assert [reply.status for reply in failed] == [503, 503]
        assert [reply.headers["X-Request-ID"] for reply in failed] == ["broken-0", "broken-1"]
        log = wait_for(server, "broken-1")

    assert {200, 400, 401, 403, 404, 405} <= statuses
    for what, secret in secrets.items():
        assert secret.lower() not in log.lower(), f"{what} was logged"

    lines = log.splitlines()
    # granian's own lines (serve.py's, about the server) are its format, not the service's.
    ours = [line for line in lines if not line.startswith("[")]
    parsed = [json.loads(line) for line in ours]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in parsed)
    assert any("\n" in line["path"] for line in parsed if line["logger"] == "apikeys.request")
    requests = [line for line in parsed if line.get("logger") == "apikeys.request"]
    assert len(requests) >= 7 * 14
    for line in requests:
        assert REQUIRED <= set(line), line
        assert "?" not in line["path"]
    assert {"peewee.migrations", "peewee", "apikeys.errors"} <= {line["logger"] for line in parsed}
    broken = [line for line in requests if line["request_id"].startswith("broken-")]
    assert [line["status"] for line in broken] == [503, 503]
    authenticated = [line for line in requests if line["status"] == 201]
    assert authenticated and all(line["key_id"] and line["org_id"] for line in authenticated)


def wait_for(server, request_id: str, timeout: float = 5.0, log_format: str = "json") -> str:
    """The log once it has the line of ``request_id`` (written as the response leaves)."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log()
        if any(line["request_id"] == request_id for line in request_lines(log, log_format)):
            return log
        assert time.monotonic() < deadline, f"no line for {request_id}:\n{log}"
        time.sleep(0.05)


def own_answers(port: int, secret: str) -> list[tuple[str, Answer, str]]:
    """Requests that the server answers itself, before or without the app: (what was sent
    as X-Request-ID or "" for none, the answer, its path)."""
    big = [("X-Big", "a" * (MAX_HEADER_BYTES + 1))]
    forwarded = [("X-Forwarded-For", "203.0.113.9")]
    sent = []
    for template in ["own-id.{}", "", "not well formed {}", "x" * 129, f"id-{secret}"]:
        for number, (method, path, headers) in enumerate(
            [
                ("GET", "/healthz", []),
                ("HEAD", "/healthz", []),
                ("GET", f"{CHECK}?key={secret}", big),
                ("GET", f"/{secret}", big),
                ("POST", KEYS, [("Content-Length", "1000000")]),
            ]
        ):
            given = template.format(number)
            request_id = [("X-Request-ID", given)] if given else []
            answer = send(port, method, path, [*request_id, *forwarded, *headers])
            sent.append((given, answer, path.partition("?")[0]))
    return sent


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_servers_own_answers_carry_a_request_id_and_a_request_line(tmp_path, log_format):
    secret = generate_secret()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "APIKEYS_TRUSTED_PROXIES": "1",
        "LOG_FORMAT": log_format,
    }
    with production(tmp_path, env) as server:
        sent = own_answers(server.port, secret)
        last = sent[-1][1].headers["X-Request-ID"]
        log = wait_for(server, last, log_format=log_format)

    assert {answer.status for _, answer, _ in sent} == {200, 413, 431}
    assert secret.lower() not in log.lower()
    lines = request_lines(log, log_format)
    for given, answer, path in sent:
        request_id = answer.headers["X-Request-ID"]
        if given.startswith("own-id."):
            assert request_id == given
        else:
            assert re.fullmatch("[0-9a-f]{32}", request_id), (given, request_id)
        (line,) = [line for line in lines if line["request_id"] == request_id]
        assert line["status"] == answer.status
        assert line["path"] == masked(path)
        assert line["remote_addr"] == "203.0.113.9"
        assert float(line["duration_ms"]) >= 0
        assert "key_id" not in line


def request_lines(log: str, log_format: str) -> list[dict]:
    """The request lines of ``log``, as fields: JSON's own, or the text line's
    ``name=value`` pairs with the message's method, path and status."""
    if log_format == "json":
        parsed = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        lines = [line for line in parsed if line["logger"] == "apikeys.request"]
        for line in lines:
            assert REQUIRED <= set(line), line
        return lines
    lines = []
    for line in log.splitlines():
        # 2026-12-03T09:31:52.306Z INFO apikeys.request GET /healthz 200 request_id=...
        words = line.split(" ")
        if len(words) > 2 and words[2] == "apikeys.request":
            method, path, status = words[3:6]
            fields = dict(word.split("=", 1) for word in words[6:])
            lines.append({**fields, "method": method, "path": path, "status": int(status)})
    return lines


def test_an_answer_past_the_deadline_has_one_request_line_the_503_its_client_had(tmp_path):
    """The app's own answer, a second late, reaches no one: it is a warning that says so,
    under the request's id, not a second request line saying 200 under an id of its own."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}"}
    with production(tmp_path, env, workers=1, target="tests.wsgi_apps:impatient_service") as server:
        late = send(server.port, "GET", f"/sleep?seconds={IMPATIENT_TIMEOUT + 1}")
        request_id = late.headers["X-Request-ID"]  # made by the server: none was sent
        deadline = time.monotonic() + 5
        while "ended past its deadline" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = server.log()
    assert late.status == 503
    lines = [line for line in request_lines(log, "json") if line["path"] == "/sleep"]
    assert [(line["status"], line["request_id"]) for line in lines] == [(503, request_id)]
    warned = [json.loads(line) for line in log.splitlines() if "ended past its deadline" in line]
    assert [(record["level"], record["request_id"]) for record in warned] == [
        ("WARNING", request_id)
    ]
    assert warned[0]["message"].startswith("GET /sleep ended past its deadline: 200 after ")
