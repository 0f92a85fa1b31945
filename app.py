"""The one place the service is assembled: ``flask --app app`` finds ``create_app``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flask_smorest
from flask import Flask, Request, Response
from flask.sessions import NullSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import MapAdapter

from apikeys import audit, db, http_errors, logs, metrics, policy, ratelimit, startup
from apikeys import config as settings
from apikeys.auth import SECURITY_SCHEMES
from apikeys.cli import settings_checked
from apikeys.routes import docs
from schemas.api_keys import ApiKeyUpdateSchema
from schemas.errors import ErrorSchema


class Api(flask_smorest.Api):
    """flask-smorest, answering its errors in the service's error shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        return http_errors.handle_http_exception(error)


class _NoSessions(SecureCookieSessionInterface):
    """The service keeps no sessions (every request presents its key): one empty session,
    which refuses any change, serves every request rather than a new one each."""

    _none = NullSession()

    def open_session(self, app: Flask, request: Request) -> NullSession:
        return self._none


class Service(Flask):
    """Flask, asking once per function rather than on every call whether it is async,
    with no sessions, no redirects for doubled slashes, WebSocket handshakes answered as
    plain requests, and answering OPTIONS with no content rather than an empty page."""

    session_interface = _NoSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable, Callable] = {}
        # werkzeug would answer "//" in a path with an HTML 308 to a URL built from the
        # client's Host: such a path names no route, so it is a 404 like any other.
        self.url_map.merge_slashes = False

    def ensure_sync(self, func: Callable) -> Callable:
        # Flask calls this for every hook and view of every request; the answer depends on
        # the function alone. A class-based view's dispatch is a new bound method each
        # time, which no cache would hit again: only plain functions are remembered.
        found = self._sync.get(func)
        if found is None:
            found = super().ensure_sync(func)
            if not inspect.ismethod(func):
                self._sync[func] = found
        return found

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        adapter = super().create_url_adapter(request)
        if adapter is not None:
            # werkzeug matches a WebSocket handshake only to WebSocket routes, of which the
            # service has none: it answered a 400 for the check of a charge point's OCPP
            # connection that a proxy forwards with its Upgrade headers. The service never
            # upgrades a connection; it answers such a request as the GET it also is.
            adapter.websocket = False
        return adapter

    def make_default_options_response(self) -> Response:
        # Flask's is a 200 with an empty text/html body: the methods are all it has to say.
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service: settings from the environment, overridden by ``config``."""
    app = Service(__name__)
    app.config.from_mapping(
        API_TITLE="Charge-point platform API keys",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served by the service itself (apikeys.routes.docs): no CDN, works offline.
        OPENAPI_SWAGGER_UI_URL=docs.URL,
    )
    with settings_checked():
        app.config.update(settings.from_environment())
        app.config.update(config or {})
        settings.validate(app.config)
        # Loaded whole before anything starts: a faulty file stops the service, never
        # half-applies.
        policy_file = app.config["APIKEYS_POLICY_FILE"]
        app.extensions["apikeys.policy"] = (
            policy.load(policy_file) if policy_file else policy.DEFAULT
        )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # First: its request hooks must come first.
    logs.init_app(app)

    # No connection: migrations and the bootstrap key are startup.prepare's, run once where
    # the server starts, so a worker starts (and answers 503) while the database is down.
    startup.bind(app.config)

    if app.config["APIKEYS_TRUSTED_PROXIES"]:
        proxied = ProxyFix(app.wsgi_app, x_for=app.config["APIKEYS_TRUSTED_PROXIES"])
        app.wsgi_app = proxied  # type: ignore[method-assign]
    db.init_app(app)
    audit.init_app(app)
    http_errors.init_app(app)
    api = Api(app, spec_kwargs={"components": {"securitySchemes": SECURITY_SCHEMES}})

    from apikeys.cli import COMMANDS
    from apikeys.routes import api_keys, audit_events, check, health

    ratelimit.init_app(app)
    metrics.init_app(app)
    # What marshmallow cannot state, registered before a route refers to it: a PATCH
    # changes at least one field.
    api.spec.components.schema("ApiKeyUpdate", {"minProperties": 1}, schema=ApiKeyUpdateSchema)
    api.register_blueprint(api_keys.blp)
    api.register_blueprint(audit_events.blp)
    api.register_blueprint(check.blp)
    api.register_blueprint(health.blp)
    app.register_blueprint(docs.bp)
    for command in COMMANDS:
        app.cli.add_command(command)
    return app
