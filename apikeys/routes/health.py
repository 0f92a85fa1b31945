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
    @blp.alt_response(
        503,
        schema=ErrorSchema,
        description="The database does not take writes (details say why), or Redis fails",
    )
    def get(self):
        """The database answers a read and takes a write; the rate-limit storage answers"""
        statuses = {
            "database": db.readiness(),
            "redis": "ok" if current_app.extensions["apikeys.limiter"].storage.check() else "down",
        }
        if any(status != "ok" for status in statuses.values()):
            raise ServiceUnavailable("Not ready", details=statuses)
        return {"status": "ok"}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.response(200)
    def get(self):
        """Prometheus metrics"""
        return metrics.exposition(current_app)
