"""compose.yaml, deploy/traefik.yml and deploy/envoy.yaml, read as their programs read them.

No Docker engine, Traefik or Envoy runs here (deploy/nginx.conf runs in a real nginx, in
tests/test_nginx.py, and deploy/Caddyfile in a real Caddy, in tests/test_caddy.py): these
tests hold the files to what the service and the suite do, so that a change on either
side that would break a deployment fails here. The Dockerfile's HEALTHCHECK command does
run, against serve.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from apikeys.config import from_environment
from apikeys.routes.check import blp as check_blueprint
from tests.servers import CHECK_INPUTS, IDENTITY, ROOT, SERVE, free_port, production

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
TRAEFIK = ROOT / "deploy" / "traefik.yml"
ENVOY = ROOT / "deploy" / "envoy.yaml"

CHECK_PATH = check_blueprint.url_prefix + "/check"
#: Where the proxies find the service: its compose service name, on serve.py's default port.
SERVICE_HOST, SERVICE_PORT = "apikeys", 8000
#: The variables serve.py reads (its docstring); the service's own are from_environment's.
SERVER_VARIABLES = {"HOST", "PORT", "WEB_CONCURRENCY"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def interpolated(value):
    """A compose value as compose reads it with none of its variables set: the defaults."""
    if isinstance(value, dict):
        return {key: interpolated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolated(item) for item in value]
    if isinstance(value, str):
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        assert "$" not in value, value
    return value


def lower(names) -> set[str]:
    return {name.lower() for name in names}


def dockerfile_instruction(name: str) -> str:
    """The Dockerfile's one ``name`` instruction, its continuation lines joined."""
    text = re.sub(r"\\\n\s*", "", DOCKERFILE.read_text())
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    assert len(found) == 1, found
    return found[0][len(name) + 1 :]


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolated(load(COMPOSE))


# compose.yaml


def test_the_service_runs_the_server_the_suite_starts(compose):
    service = compose["services"]["apikeys"]
    assert service["build"] == "."
    assert json.loads(dockerfile_instruction("CMD")) == ["python", "serve.py"]
    assert service["command"] == ["python", "serve.py"]
    assert SERVE == ROOT / "serve.py"  # what tests.servers.production starts


def test_the_services_environment_is_what_it_reads(compose):
    environment = compose["services"]["apikeys"]["environment"]
    known = set(from_environment({})) | SERVER_VARIABLES
    assert set(environment) <= known, set(environment) - known

    database = urlsplit(environment["DATABASE_URL"])
    postgres = compose["services"]["postgres"]["environment"]
    assert database.scheme == "postgresql"
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["POSTGRES_DB"]

    redis = urlsplit(environment["REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    # One proxy (nginx) in front: its X-Forwarded-For names the client.
    assert environment["APIKEYS_TRUSTED_PROXIES"] == "1"
    assert "PORT" not in environment  # the proxies below reach it on serve.py's default


def test_each_service_starts_once_what_it_needs_is_healthy(compose):
    services = compose["services"]
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
        assert services["apikeys"]["depends_on"][name] == {"condition": "service_healthy"}
    # The service's health is the image's HEALTHCHECK (tested below), not one of compose's.
    assert "healthcheck" not in services["apikeys"]
    assert services["nginx"]["depends_on"]["apikeys"] == {"condition": "service_healthy"}
    assert "backend" in services["nginx"]["depends_on"]


def test_nginx_runs_deploy_nginx_conf_pointed_at_the_services(compose, tmp_path):
    nginx = compose["services"]["nginx"]
    mounts = [volume.split(":") for volume in nginx["volumes"]]
    [(source, target, _)] = [m for m in mounts if (ROOT / m[0]).resolve() == NGINX_CONF]
    assert ":80" in nginx["ports"][0] and "listen 80;" in NGINX_CONF.read_text()

    # The command's own rewrite, run by a real shell on the real file.
    shell, flag, script = nginx["command"]
    assert (shell, flag) == ("sh", "-c")
    rewrite, start = script.split(" && ")
    written = tmp_path / "nginx.conf"
    rewrite = rewrite.replace(target, str(NGINX_CONF)).replace("/tmp/nginx.conf", str(written))
    subprocess.run(["sh", "-c", rewrite], check=True, timeout=10)
    assert shlex.split(start)[:3] == ["exec", "nginx", "-c"] and "/tmp/nginx.conf" in start

    def servers(text: str) -> dict[str, list[str]]:
        blocks = re.findall(r"upstream (\w+) \{(.*?)\}", text, re.S)
        return {name: re.findall(r"^\s*server (\S+);", body, re.M) for name, body in blocks}

    assert servers(written.read_text()) == {
        "apikeys": [f"{SERVICE_HOST}:{SERVICE_PORT}"],
        "backend": ["backend:9000"],
    }
    original, rewritten = NGINX_CONF.read_text().splitlines(), written.read_text().splitlines()
    changed = [new for old, new in zip(original, rewritten, strict=True) if old != new]
    assert len(changed) == 2, changed
    assert "--port=9000" in compose["services"]["backend"]["command"]


# The Dockerfile


def test_the_healthcheck_asks_the_port_serve_py_listens_on(tmp_path):
    command = dockerfile_instruction("HEALTHCHECK").split(" CMD ", 1)[1]
    # `python` as in the image: this interpreter, first on PATH.
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

    def healthcheck(port: int) -> int:
        env = {**os.environ, "PATH": path, "PORT": str(port)}
        return subprocess.run(["sh", "-c", command], env=env, timeout=10).returncode

    with production(tmp_path, {}, workers=1) as server:
        assert healthcheck(server.port) == 0
        assert healthcheck(free_port()) != 0


# deploy/traefik.yml


def test_traefik_strips_the_clients_copies_then_asks_the_check():
    http = load(TRAEFIK)["http"]
    middlewares = http["middlewares"]
    checks = {name for name, spec in middlewares.items() if "forwardAuth" in spec}
    strips = {name for name, spec in middlewares.items() if "headers" in spec}
    assert http["routers"]
    for router in http["routers"].values():
        chain = router["middlewares"]
        [check] = [index for index, name in enumerate(chain) if name in checks]
        [strip] = [index for index, name in enumerate(chain) if name in strips]
        assert strip < check

    [strip] = [middlewares[name]["headers"]["customRequestHeaders"] for name in strips]
    removed = lower(name for name, value in strip.items() if value == "")
    assert lower(IDENTITY + CHECK_INPUTS) <= removed
    # Underscored spellings, which WSGI backends read as the hyphenated names.
    assert lower(name.replace("-", "_") for name in IDENTITY) <= removed


def test_traefik_asks_the_check_with_only_what_it_reads():
    middlewares = load(TRAEFIK)["http"]["middlewares"]
    [auth] = [spec["forwardAuth"] for spec in middlewares.values() if "forwardAuth" in spec]
    address = urlsplit(auth["address"])
    assert (address.hostname, address.port, address.path) == (
        SERVICE_HOST,
        SERVICE_PORT,
        CHECK_PATH,
    )
    assert auth["trustForwardHeader"] is False
    assert auth["authResponseHeaders"] == list(IDENTITY)
    sent = lower(auth["authRequestHeaders"])
    assert {"authorization", "x-api-key"} <= sent
    assert not sent & lower(IDENTITY + CHECK_INPUTS)


# deploy/envoy.yaml


def envoy_connection_manager() -> dict:
    [listener] = load(ENVOY)["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [manager] = chain["filters"]
    assert manager["name"] == "envoy.filters.network.http_connection_manager"
    return manager["typed_config"]


def envoy_filters() -> list[str]:
    return [spec["name"] for spec in envoy_connection_manager()["http_filters"]]


def envoy_filter(name: str) -> dict:
    [config] = [
        spec["typed_config"]
        for spec in envoy_connection_manager()["http_filters"]
        if spec["name"] == name
    ]
    return config


def test_envoy_strips_the_clients_identity_before_ext_authz():
    filters = envoy_filters()
    assert filters.index("envoy.filters.http.header_mutation") < filters.index(
        "envoy.filters.http.ext_authz"
    )
    assert filters[-1] == "envoy.filters.http.router"

    mutations = envoy_filter("envoy.filters.http.header_mutation")["mutations"]
    requests = mutations["request_mutations"]
    removed = {mutation["remove"] for mutation in requests if "remove" in mutation}
    assert lower(IDENTITY) | {"x-auth-error"} <= removed
    # The check's target: what Envoy routes, over any copy the client sent.
    added = {m["append"]["header"]["key"]: m["append"] for m in requests if "append" in m}
    assert added["x-original-method"]["header"]["value"] == "%REQ(:METHOD)%"
    assert added["x-original-uri"]["header"]["value"] == "%REQ(:PATH)%"
    for header in added.values():
        assert header["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"

    manager = envoy_connection_manager()
    options = manager["common_http_protocol_options"]
    assert options["headers_with_underscores_action"] == "DROP_HEADER"
    [route] = manager["route_config"]["virtual_hosts"][0]["routes"]
    dropped = lower(route["request_headers_to_remove"])
    assert lower(CHECK_INPUTS) <= dropped
    # At the router, after ext_authz, these would remove the check's own copies.
    assert not dropped & lower(IDENTITY)


def test_envoy_asks_the_check_and_passes_its_identity_on():
    authz = envoy_filter("envoy.filters.http.ext_authz")
    service = authz["http_service"]
    assert service["path_override"] == CHECK_PATH
    assert "path_prefix" not in service
    assert authz["failure_mode_allow"] is False

    sent = {pattern["exact"] for pattern in authz["allowed_headers"]["patterns"]}
    assert {"x-api-key", "x-original-method", "x-original-uri"} <= sent  # + Authorization
    assert not sent & lower(IDENTITY + ("X-Required-Scope", "X-Forwarded-Method"))

    response = service["authorization_response"]
    upstream = [pattern["exact"] for pattern in response["allowed_upstream_headers"]["patterns"]]
    assert upstream == [name.lower() for name in IDENTITY]
    to_client = response["allowed_client_headers"]["patterns"]
    assert {"exact": "retry-after"} in to_client and {"prefix": "ratelimit-"} in to_client

    [cluster] = [
        c
        for c in load(ENVOY)["static_resources"]["clusters"]
        if c["name"] == service["server_uri"]["cluster"]
    ]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == (SERVICE_HOST, SERVICE_PORT)
