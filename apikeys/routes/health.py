"""Liveness, readiness and metrics, for orchestrators, load balancers and Prometheus."""

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from apikeys import db, metrics
from apikeys.errors import ServiceUnavailable
from schemas.errors import ErrorSchema
from schemas.health import StatusSchema

blp = Blueprint("health", __name__, description="Process health.")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, StatusSchema)
    def get(self):
        """The process is up"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200, StatusSchema)
    @blp.alt_response(503, schema=ErrorSchema, description="The database or Redis does not answer")
    def get(self):
        """The database and the rate-limit storage both answer"""
        checks = {
            "database": db.reachable(),
            "redis": current_app.extensions["apikeys.limiter"].storage.check(),
        }
        if not all(checks.values()):
            raise ServiceUnavailable(
                "Not ready", details={name: "ok" if ok else "down" for name, ok in checks.items()}
            )
        return {"status": "ok"}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.response(200)
    def get(self):
        """Prometheus metrics"""
        return metrics.exposition(current_app)
