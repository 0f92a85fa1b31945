"""Swagger UI's files, served by the service itself: /api/docs works with no network.

They come from the flask-swagger-ui package, which ships the current swagger-ui-dist
(only its ``dist`` directory is used, not its blueprint). Their URL names the Swagger UI
version, so a browser may keep them for a year: an upgrade changes the URL, never the
bytes behind one.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, abort, send_from_directory

DIST = Path(flask_swagger_ui.__file__).parent / "dist"
VERSION = (DIST / "VERSION").read_text().strip().removeprefix("v")
#: The base URL flask-smorest's page loads Swagger UI from (OPENAPI_SWAGGER_UI_URL).
URL = f"/api/docs/assets/{VERSION}/"
#: The files that page loads, with their media types; nothing else of the package is served.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
}
ONE_YEAR = 365 * 24 * 3600

bp = Blueprint("docs_assets", __name__)


@bp.get(URL + "<name>")
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    response = send_from_directory(DIST, name, mimetype=ASSETS[name], max_age=ONE_YEAR)
    response.cache_control.immutable = True
    return response
