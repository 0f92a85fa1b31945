"""A model of the key rules (SPEC §1-3, §7), and Hypothesis driving the API against it.

Two organizations create, list, get, use (the check, and the API itself), revoke and let
expire their keys, under a clock the test moves; every answer, status and body, must be
what the model predicts. ``FUZZ_EXAMPLES`` raises the budget for a release run.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from apikeys import service
from apikeys.errors import Unauthorized
from apikeys.models import Organization
from apikeys.scopes import READ_API_KEYS, SCOPES, WRITE_API_KEYS

URL = "/api/v1/org/api-keys"
START = datetime(2030, 1, 1, 12, 0, 0)
RUNS = int(os.environ.get("FUZZ_EXAMPLES") or 50)
STEPS = 40

NAMES = st.sampled_from(["ci", "CI", " ci ", "dashboard", "billing sync", "ops"])
REQUESTED = st.lists(st.sampled_from((*SCOPES, "write:everything")), min_size=1, max_size=4)
EXPIRIES = st.sampled_from([None, None, 1, 2, 30, 3650])
# Shifts of the clock: within a second of an expiry, across it, far past it.
SHIFTS = st.sampled_from([1, 60, 3600, 86_399, 86_400, 2 * 86_400, 31 * 86_400])


def rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Key:
    """What the model knows of one key."""

    id: str
    org: str
    name: str
    scopes: tuple[str, ...]
    secret: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = None
    revoked: bool = False

    def valid(self, now: datetime) -> bool:
        """Whether it authenticates: neither revoked nor expired (at its expiry it is)."""
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def listed(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "key_hint": "evk_..." + self.secret[-4:],
            "scopes": list(self.scopes),
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at),
            "expires_at": rfc3339(self.expires_at),
            # The model's keys are never given a limit of their own, nor rolled.
            "rate_limit": None,
            "previous_key_expires_at": None,
        }


class KeyLifecycle(RuleBasedStateMachine):
    """The service against the model, one request per step."""

    app: Flask
    _worlds = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.client = self.app.test_client()
        self.travel = time_machine.travel(START.replace(tzinfo=UTC), tick=False)
        self.clock = self.travel.start()
        self.now = START
        self.keys: list[Key] = []

    @initialize()
    def two_organizations(self) -> None:
        world = next(self._worlds)
        for name in ("acme", "globex"):
            org = Organization.create(name=f"{name}-{world}")
            issued = service.create_key(org.id, "admin", SCOPES)
            self.keys.append(Key(issued.id, org.id, "admin", SCOPES, issued.key, self.now, None))

    def teardown(self) -> None:
        self.travel.stop()

    # Requests, each checked against the model.

    def send(self, caller: Key, method: str, path: str, **kwargs):
        """One request as ``caller``; a valid key records its use, whatever the answer."""
        headers = {"Authorization": f"Bearer {caller.secret}", **kwargs.pop("headers", {})}
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        if caller.valid(self.now):
            caller.last_used_at = self.now
        return response

    def refused(self, response, caller: Key, scope: str) -> bool:
        """Whether the model refuses ``caller`` before the view runs; asserts how."""
        if not caller.valid(self.now):
            assert_error(response, 401, "unauthorized")
            assert response.json["error"]["message"] == Unauthorized.message
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
            return True
        if scope not in caller.scopes:
            assert_error(response, 403, "forbidden")
            return True
        return False

    def of(self, org: str) -> list[Key]:
        return [key for key in self.keys if key.org == org and not key.revoked]

    @rule(data=st.data(), name=NAMES, requested=REQUESTED, days=EXPIRIES)
    def create(self, data, name, requested, days) -> None:
        caller = data.draw(st.sampled_from(self.keys), label="caller")
        self.tick()
        body = {"name": name, "scopes": requested, "expires_in_days": days}
        response = self.send(caller, "POST", URL, json=body)
        if self.refused(response, caller, WRITE_API_KEYS):
            return
        granted = tuple(scope for scope in SCOPES if scope in requested)
        if "write:everything" in requested:
            assert_error(response, 400, "invalid_scope")
        elif not set(granted) <= set(caller.scopes):
            assert_error(response, 403, "forbidden")
            for missing in set(granted) - set(caller.scopes):
                assert missing in response.json["error"]["message"]
        elif name.strip() in {key.name for key in self.of(caller.org)}:
            assert_error(response, 400, "name_taken")
        else:
            assert response.status_code == 201, response.json
            assert response.headers["Cache-Control"] == "no-store"
            created = response.json
            expires_at = self.now + timedelta(days=days) if days else None
            key = Key(
                created["id"],
                caller.org,
                name.strip(),
                granted,
                created["key"],
                self.now,
                expires_at,
            )
            shown = key.listed()
            assert created == {
                **{field: shown[field] for field in ("id", "name", "scopes", "created_at")},
                "key": key.secret,
                "expires_at": shown["expires_at"],
                "rate_limit": None,
            }
            self.keys.append(key)

    @rule(data=st.data())
    def list_keys(self, data) -> None:
        caller = data.draw(st.sampled_from(self.keys), label="caller")
        response = self.send(caller, "GET", URL)
        if self.refused(response, caller, READ_API_KEYS):
            return
        # Newest first; expired keys are listed, revoked ones are not.
        newest_first = sorted(self.of(caller.org), key=lambda key: key.created_at, reverse=True)
        expected = [key.listed() for key in newest_first]
        assert response.status_code == 200
        assert response.json == {
            "data": expected,
            "total": len(expected),
            "has_more": False,
            "next_cursor": None,
        }

    @rule(data=st.data(), limit=st.integers(1, 4))
    def list_keys_a_page_at_a_time(self, data, limit) -> None:
        caller = data.draw(st.sampled_from(self.keys), label="caller")
        shown, cursor = [], None
        while True:
            after = f"&after={cursor}" if cursor else ""
            response = self.send(caller, "GET", f"{URL}?limit={limit}{after}")
            if self.refused(response, caller, READ_API_KEYS):
                return
            assert response.status_code == 200
            assert response.json["total"] == len(self.of(caller.org))
            assert len(response.json["data"]) <= limit
            shown += response.json["data"]
            if not response.json["has_more"]:
                assert response.json["next_cursor"] is None
                break
            cursor = response.json["next_cursor"]
        newest_first = sorted(self.of(caller.org), key=lambda key: key.created_at, reverse=True)
        assert shown == [key.listed() for key in newest_first]

    @rule(data=st.data())
    def get_key(self, data) -> None:
        caller = data.draw(st.sampled_from(self.keys), label="caller")
        target = data.draw(st.sampled_from(self.keys), label="target")
        response = self.send(caller, "GET", f"{URL}/{target.id}")
        if self.refused(response, caller, READ_API_KEYS):
            return
        if target.org != caller.org or target.revoked:
            assert_error(response, 404, "not_found")
        else:
            assert response.status_code == 200
            assert response.json == target.listed()

    @rule(data=st.data())
    def revoke(self, data) -> None:
        caller = data.draw(st.sampled_from(self.keys), label="caller")
        target = data.draw(st.sampled_from(self.keys), label="target")
        response = self.send(caller, "DELETE", f"{URL}/{target.id}")
        if self.refused(response, caller, WRITE_API_KEYS):
            return
        if target.org != caller.org or target.revoked:
            assert_error(response, 404, "not_found")
        else:
            assert response.status_code == 204
            assert response.get_data() == b""
            target.revoked = True

    @rule(data=st.data(), scope=st.sampled_from(SCOPES))
    def check(self, data, scope) -> None:
        """The sidecar's question, with the key in X-API-Key as a proxy forwards it."""
        key = data.draw(st.sampled_from(self.keys), label="key")
        response = self.client.get(
            "/api/v1/auth/check", headers={"X-API-Key": key.secret, "X-Required-Scope": scope}
        )
        if key.valid(self.now):
            key.last_used_at = self.now
        if self.refused(response, key, scope):
            return
        assert response.status_code == 200
        assert response.json == {"org_id": key.org, "key_id": key.id, "scopes": list(key.scopes)}
        assert response.headers["X-Auth-Key-Id"] == key.id
        assert response.headers["X-Auth-Org-Id"] == key.org
        assert response.headers["X-Auth-Scopes"] == " ".join(key.scopes)

    @rule(seconds=SHIFTS)
    def time_passes(self, seconds) -> None:
        self.now += timedelta(seconds=seconds)
        self.clock.shift(timedelta(seconds=seconds))

    def tick(self) -> None:
        """A second passes before each create, so that the list's order is the model's."""
        self.time_passes(1)

    @invariant()
    def clock_agrees(self) -> None:
        assert datetime.now(UTC).replace(tzinfo=None) == self.now


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, (status, response.get_data(as_text=True))
    assert response.json["error"]["code"] == code, response.json


@pytest.fixture
def model_settings(settings):
    # Every use recorded (the model predicts last_used_at exactly); limits out of the way.
    settings["LAST_USED_INTERVAL_SECONDS"] = 0
    settings["RATE_LIMIT_PER_KEY"] = "1000000/minute"
    settings["RATE_LIMIT_FAILED_AUTH"] = "1000000/minute"
    return settings


def test_the_service_behaves_as_the_model(model_settings, app):
    machine = type("Run", (KeyLifecycle,), {"app": app})
    machine.TestCase.settings = settings(
        max_examples=RUNS,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine.TestCase().runTest()
