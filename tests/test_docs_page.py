"""/api/docs in a real browser: Debian's Chromium, headless, driven by Playwright.

The page must render every documented operation from the service alone: any request to
another host is recorded and refused, as it would fail on a machine with no internet.
Playwright never downloads a browser here; it drives the system's ``/usr/bin/chromium``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, sync_playwright

from apikeys.routes import docs
from tests.conftest import SETTINGS
from tests.servers import Server, production

CHROMIUM = "/usr/bin/chromium"
#: Nothing in the background that could reach out on its own (updates, sync, QUIC probes).
FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Generous: two shared cores, and Swagger UI parses 1.7 MB of JavaScript.
RENDER_TIMEOUT_MS = 60_000
#: What the page shows of each operation, read from Swagger UI's own markup.
OPERATIONS_JS = """blocks => blocks.map(block => [
    block.querySelector('.opblock-summary-method').textContent.trim().toLowerCase(),
    block.querySelector('.opblock-summary-path').dataset.path,
    block.querySelector('.opblock-summary-description').textContent.trim(),
])"""


@dataclass
class Visit:
    """What the browser did while showing the page."""

    operations: set[tuple[str, str, str]] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("docs")
    # The machine's settings cleared: SQLite in the test's directory, limits in memory.
    env = {name: "" for name in SETTINGS}
    env["DATABASE_URL"] = f"sqlite:///{directory / 'apikeys.db'}"
    with production(directory, env, workers=1) as server:
        yield server


def visit_docs(server: Server, profile: Path) -> Visit:
    """Open /api/docs and wait for Swagger UI to render its operations."""
    local = f"127.0.0.1:{server.port}"
    visit = Visit()

    def only_this_service(route: Route) -> None:
        # Refused at once rather than left to time out: the page must not need it.
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            browser.route("**/*", only_this_service)
            page = browser.new_page()
            page.on("request", lambda request: visit.requests.append(request.url))
            page.on("pageerror", lambda error: visit.page_errors.append(str(error)))
            # "load": every script has run, and the page's onload has started Swagger UI.
            page.goto(f"http://{local}/api/docs", wait_until="load")
            if visit.page_errors:
                return visit
            page.wait_for_selector(".opblock", timeout=RENDER_TIMEOUT_MS)
            rows = page.eval_on_selector_all(".opblock", OPERATIONS_JS)
            visit.operations = {tuple(row) for row in rows}
        finally:
            browser.close()
    return visit


def documented_operations(server: Server) -> set[tuple[str, str, str]]:
    reply = server.request("GET", "/api/openapi.json")
    assert reply.status == 200
    return {
        (method, path, operation["summary"])
        for path, item in json.loads(reply.body)["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS  # not the path's shared "parameters"
    }


def test_the_docs_page_renders_every_operation_from_this_machine_alone(service, tmp_path):
    visit = visit_docs(service, tmp_path / "profile")

    assert visit.page_errors == []
    origin = f"http://127.0.0.1:{service.port}/"
    assert [url for url in visit.requests if not url.startswith(origin)] == []
    assert visit.operations == documented_operations(service)
    paths = {(method, path) for method, path, _ in visit.operations}
    assert {
        ("get", "/api/v1/org/api-keys"),
        ("post", "/api/v1/org/api-keys"),
        ("delete", "/api/v1/org/api-keys/{key_id}"),
        ("get", "/api/v1/auth/check"),
    } <= paths
    # Swagger UI itself came from the service, not from a cache or a CDN.
    assert origin + docs.URL.lstrip("/") + "swagger-ui-bundle.js" in visit.requests


@pytest.mark.parametrize("name", sorted(docs.ASSETS))
def test_each_asset_is_served_with_its_type_and_kept_a_year(service, name):
    reply = service.request("GET", docs.URL + name)
    assert reply.status == 200
    assert reply.headers.get_content_type() == docs.ASSETS[name]
    assert reply.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert reply.body == (docs.DIST / name).read_bytes()
    again = service.request("GET", docs.URL + name, {"If-None-Match": reply.headers["ETag"]})
    assert (again.status, again.body) == (304, b"")


@pytest.mark.parametrize(
    "path",
    [
        docs.URL + "index.css",  # in the package, but not a file the page loads
        docs.URL + "VERSION",
        docs.URL + "..%2FVERSION",
        "/api/docs/assets/0.0.1/swagger-ui.css",  # another version's URL
        "/api/docs/assets/swagger-ui.css",
    ],
)
def test_anything_else_under_the_assets_is_a_json_404(service, path):
    reply = service.request("GET", path)
    assert reply.status == 404
    assert reply.headers.get_content_type() == "application/json"
    assert json.loads(reply.body)["error"]["code"] == "not_found"
