"""Liveness, readiness and metrics, for orchestrators, load balancers and Prometheus."""

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from apikeys import db, metrics, ratelimit
from apikeys.errors import ServiceUnavailable
from schemas.errors import ErrorSchema
from schemas.health import ReadinessSchema, StatusSchema

blp = Blueprint("health", __name__, description="Process health.")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, StatusSchema)
    def get(self):
        """The process is up"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(
        503,
        schema=ErrorSchema,
        description="The database does not answer a read or take a write (details say why)",
    )
    def get(self):
        """The database reads and writes; Redis's state is reported, but never makes it unready"""
        # Every instance shares one Redis, and each serves on without it with limits in its
        # own memory: were Redis to make instances unready, a balancer would pull them all.
        checks = {
            "database": db.readiness(),
            "redis": ratelimit.storage_state(current_app),
        }
        if checks["database"] != "ok":
            raise ServiceUnavailable("Not ready", details=checks)
        return {"status": "ok", "checks": checks}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    @blp.response(200)
    def get(self):
        """Prometheus metrics"""
        return metrics.exposition(current_app)
