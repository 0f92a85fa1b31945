"""Contract fuzzing: schemathesis drives the service from its own OpenAPI document.

Every answer must agree with the document (status, content type, headers, body) and none
may be a server error, for requests built from the document (positive) and requests it
forbids (negative), and along the document's links: create, get, use, revoke, get again.
``FUZZ_EXAMPLES`` raises the budget for a release run (``make fuzz``).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky, Unsatisfiable
from marshmallow import ValidationError
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core import NOT_SET
from schemathesis.core.failures import FailureGroup

from schemas.fields import MAX_NAME_LENGTH, Label
from tests.conftest import bearer

#: Examples per operation and mode, and scenarios for the links: a CI budget by default.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 25)
ROUTE_HEADERS = (
    "X-Original-Method",
    "X-Original-URI",
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
)


def _a_label(name: str) -> bool:
    try:
        Label().deserialize(name)
    except ValidationError:
        return False
    return True


#: The document's `label` format (a key's name): what the name field accepts, which its
#: description states.
LABEL = st.text(
    st.characters(exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=MAX_NAME_LENGTH,
).filter(_a_label)
schemathesis.openapi.format("label", LABEL)


@pytest.fixture
def unlimited(settings):
    """Limits far above what the fuzzer sends: 429 is proved in test_ratelimit."""
    settings["RATE_LIMIT_PER_KEY"] = "1000000/minute"
    settings["RATE_LIMIT_FAILED_AUTH"] = "1000000/minute"
    return settings


@pytest.fixture
def api_schema(unlimited, app, admin):
    """The document the app serves, authenticated as a key with every scope."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)

    @schema.auth(refresh_interval=None)
    class Admin:
        def get(self, case, ctx):
            return admin.key

        def set(self, case, key, ctx):
            # A link that presents a new key (X-API-Key) must not carry the admin's too:
            # two different keys on one request are refused.
            if "X-API-Key" not in case.headers:
                case.headers["Authorization"] = f"Bearer {key}"

    return schema


def status_documented(ctx, response, case) -> None:
    """Every status but a server error is listed for its operation, not left to `default`."""
    documented = case.operation.definition.raw["responses"]
    status = response.status_code
    assert status >= 500 or str(status) in documented, (
        f"{status} is not documented for {case.operation.label}"
    )


def _over_the_cap(response) -> bool:
    """A rate_limit above RATE_LIMIT_MAX_PER_KEY, an operator's setting."""
    error = response.json()["error"]
    return error["code"] == "invalid_request" and list(error.get("details", {})) == ["rate_limit"]


def refused_for_a_stated_reason(ctx, response, case) -> None:
    """A request the document allows is refused only for what a schema cannot say:
    a name already taken, a rate limit above the operator's cap, a cursor the listing did
    not give, or a check told nothing (or half a method/URI pair) to check."""
    if not case.meta.generation.mode.is_positive or response.status_code != 400:
        return
    code = response.json()["error"]["code"] if response.content else "invalid_request"
    if case.method == "GET" and "after" in (case.query or {}):
        details = response.json()["error"].get("details", {})
        assert code == "invalid_request" and set(details) == {"after"}, response.text
    elif case.operation.path in ("/api/v1/org/api-keys", "/api/v1/org/api-keys/{key_id}"):
        assert code == "name_taken" or _over_the_cap(response), response.text
    elif case.operation.path == "/api/v1/auth/check":
        assert code == "invalid_request", response.text
    else:
        raise AssertionError(f"valid request refused: {response.text}")


CHECKS = {
    "additional_checks": [status_documented, refused_for_a_stated_reason],
    "excluded_checks": [positive_data_acceptance],
}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_as_documented(api_schema, mode):
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            case.call_and_validate(**CHECKS)

        try:
            fuzz()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid: it has no negative case.
            if mode is GenerationMode.POSITIVE:
                raise
        except FailureGroup as error:
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)


def test_links_create_get_use_revoke_and_get_again(api_schema, admin):
    """Scenarios along the document's links: among them, a key is created and presented to
    the check, and a key is created, revoked, and then not found."""
    history = Lifecycles()
    scenarios = []

    class Scenarios(api_schema.as_state_machine()):
        def before_call(self, case):
            # The scenarios learn ids from answers (the audit log names the admin key): one
            # that rolled, revoked or narrowed the key every scenario acts with would leave
            # the rest nothing but 401s. Its own key is spared: another key's id instead.
            if (case.path_parameters or {}).get("key_id") == admin.id:
                case.path_parameters["key_id"] = "key_notTheAdminKey000000"
            # The link asks the check about the new key's scope alone; the route headers
            # the fuzzer adds are fuzzed with the admin key in the test above.
            if "X-API-Key" in case.headers:
                for name in ROUTE_HEADERS:
                    case.headers.pop(name, None)

        def validate_response(self, response, case, **kwargs):
            history.record(case, response)
            case.validate_response(
                response, transport_kwargs=kwargs or None, recorder=self.recorder, **CHECKS
            )

        def teardown(self):
            scenarios.append(self)
            super().teardown()

    # Two paths, not one: a key both used and revoked in one scenario takes the fuzzer
    # hundreds of scenarios to come upon, one run in five more than ten times the budget.
    lifecycles = (["created", "used"], ["created", "DELETE 204", "GET 404"])
    # At least the budget; then on, in batches, until a key has gone each way.
    while len(scenarios) < EXAMPLES or not all(map(history.completed, lifecycles)):
        assert len(scenarios) < 10 * EXAMPLES, history.steps
        try:
            Scenarios.run(settings=stateful_settings(EXAMPLES))
        except Flaky:
            # Which links a scenario may follow is learned from the answers, so Hypothesis
            # sees a run draw differently; schemathesis' own runner starts a new suite too.
            continue


class Lifecycles:
    """What happened to each key the scenarios created, in order."""

    def __init__(self) -> None:
        self.steps: dict[str, list[str]] = {}
        self.ids: dict[str, str] = {}

    def record(self, case, response) -> None:
        if case.operation.definition.raw.get("operationId") == "createApiKey":
            if response.status_code == 201:
                created = response.json()
                self.ids[created["key"]] = created["id"]
                self.steps[created["id"]] = ["created"]
        elif case.path == "/api/v1/auth/check":
            key_id = self.ids.get(case.headers.get("X-API-Key"))
            if key_id and response.status_code == 200:
                self.steps[key_id].append("used")
        elif case.path_parameters and case.path_parameters.get("key_id") in self.steps:
            self.steps[case.path_parameters["key_id"]].append(
                f"{case.method} {response.status_code}"
            )

    def completed(self, lifecycle: list[str]) -> bool:
        """Whether some key went through ``lifecycle`` (other steps in between allowed)."""
        return any(_in_order(lifecycle, steps) for steps in self.steps.values())


def _in_order(wanted: list[str], steps: list[str]) -> bool:
    remaining = iter(steps)
    return all(step in remaining for step in wanted)


def stateful_settings(scenarios: int) -> settings:
    return settings(
        max_examples=scenarios,
        # The service keeps its state between scenarios: a replay or a shrink would not meet
        # the same world, so only generation runs (as in schemathesis' own runner).
        phases=[Phase.generate],
        stateful_step_count=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def test_every_link_names_a_real_operation_and_field(client):
    """The links are the document's promise of what a client can do next: each target
    exists, and each value comes from a field the response (or request) really has."""
    doc = client.get("/api/openapi.json").json
    operations = {
        operation.get("operationId"): (path, method)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }
    schemas = doc["components"]["schemas"]
    links = [
        (path, response, link)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) == 9
    for path, response, link in links:
        if "operationId" in link:
            assert link["operationId"] in operations
        else:
            target_path, method = link["operationRef"].removeprefix("#/paths/").rsplit("/", 1)
            assert method in doc["paths"][target_path.replace("~1", "/")]
        for value in link["parameters"].values():
            if value.startswith("$response.body#/"):
                field = value.removeprefix("$response.body#/").split("/")[0]
                schema = response["content"]["application/json"]["schema"]["$ref"]
                assert field in schemas[schema.rsplit("/", 1)[1]]["properties"]
            else:
                assert value == "$request.path.key_id" and "{key_id}" in path


# Answers the fuzzer does not reach with its key and its limits, held to the document too.

KEY_OPERATIONS = [
    ("/api/v1/org/api-keys", "GET"),
    ("/api/v1/org/api-keys", "POST"),
    ("/api/v1/org/api-keys/{key_id}", "GET"),
    ("/api/v1/org/api-keys/{key_id}", "DELETE"),
    ("/api/v1/org/api-keys/{key_id}", "PATCH"),
    ("/api/v1/org/api-keys/{key_id}/roll", "POST"),
    ("/api/v1/auth/check", "GET"),
]
BODIES = {
    ("/api/v1/org/api-keys", "POST"): {"name": "n", "scopes": ["read:billing"]},
    ("/api/v1/org/api-keys/{key_id}", "PATCH"): {"name": "n"},
    ("/api/v1/org/api-keys/{key_id}/roll", "POST"): {"grace_period_seconds": 60},
}


@pytest.fixture
def document(app):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app)


def send(document, path, method, **kwargs):
    """The request as a schemathesis case, so that its answer meets every check."""
    case = document[path][method].Case(
        path_parameters={"key_id": "key_unknown"} if "{key_id}" in path else None,
        headers={"X-Required-Scope": "read:billing", **kwargs.pop("headers", {})},
        **kwargs,
    )
    response = case.call()
    case.validate_response(response, additional_checks=[status_documented])
    return response


@pytest.mark.parametrize(("path", "method"), KEY_OPERATIONS)
def test_refused_without_a_key_as_documented(document, path, method):
    assert send(document, path, method).status_code == 401


@pytest.fixture
def one_per_minute(settings):
    settings["RATE_LIMIT_PER_KEY"] = "1/minute"


@pytest.mark.parametrize(("path", "method"), KEY_OPERATIONS)
def test_rate_limited_as_documented(one_per_minute, document, make_key, path, method):
    headers = {"X-API-Key": make_key().key}
    body = BODIES.get((path, method), NOT_SET)
    send(document, path, method, headers=headers, body=body)
    assert send(document, path, method, headers=headers, body=body).status_code == 429


def test_too_large_as_documented(document, admin):
    body = {"name": "x" * 70_000, "scopes": ["read:billing"]}
    response = send(document, "/api/v1/org/api-keys", "POST", headers=bearer(admin.key), body=body)
    assert response.status_code == 413
