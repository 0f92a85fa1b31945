"""The ceiling: a bare Flask app that does nothing but return a small JSON body.

Served by the same server with the same configuration as the service, it measures
what this stack (server, WSGI, Flask) costs on this machine before any work is done.
"""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/ceiling")
    def ceiling():
        return {"status": "ok"}

    return app
