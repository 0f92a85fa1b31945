"""Liveness for orchestrators and load balancers."""

from flask.views import MethodView
from flask_smorest import Blueprint

blp = Blueprint("health", __name__, description="Process health.")


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200)
    def get(self):
        """The process is up"""
        return {"status": "ok"}
