"""/api/v1/org/api-keys: list, create, get and revoke the caller's organization's keys."""

from flask.views import MethodView

from apikeys import service
from apikeys.auth import principal
from apikeys.ratelimit import show_budget, spend_budget
from apikeys.routes import Blueprint, protected
from apikeys.scopes import READ_API_KEYS, WRITE_API_KEYS
from schemas.api_keys import (
    ApiKeyCreatedSchema,
    ApiKeyCreateSchema,
    ApiKeyListSchema,
    ApiKeySchema,
)

blp = Blueprint(
    "api_keys",
    __name__,
    url_prefix="/api/v1/org/api-keys",
    description="Your organization's API keys.",
)
# Each request spends one unit of its key's budget (its address's if it fails to
# authenticate), before the view runs.
blp.before_request(spend_budget)
blp.after_request(show_budget)


@blp.route("")
class ApiKeys(MethodView):
    @protected(blp, READ_API_KEYS)
    @blp.response(200, ApiKeyListSchema)
    def get(self):
        """List your organization's keys, newest first (revoked keys are left out)"""
        keys = service.list_keys(principal().org_id)
        return {"data": keys, "total": len(keys)}

    @protected(blp, WRITE_API_KEYS, 400, 413)
    @blp.arguments(ApiKeyCreateSchema, error_status_code=400)
    @blp.response(
        201, ApiKeyCreatedSchema, headers={"Cache-Control": {"schema": {"type": "string"}}}
    )
    def post(self, body):
        """Create a key: its secret is in this response and nowhere else, ever"""
        caller = principal()
        created = service.create_key(
            caller.org_id, body["name"], body["scopes"], body["expires_in_days"], caller.scopes
        )
        return created, {"Cache-Control": "no-store"}


@blp.route("/<key_id>")
class ApiKeyById(MethodView):
    @protected(blp, READ_API_KEYS, 404)
    @blp.response(200, ApiKeySchema)
    def get(self, key_id):
        """Get one of your organization's keys"""
        return service.get_key(principal().org_id, key_id)

    @protected(blp, WRITE_API_KEYS, 404)
    @blp.response(204)
    def delete(self, key_id):
        """Revoke a key, for good; the next request that presents it fails"""
        service.revoke_key(principal().org_id, key_id)
