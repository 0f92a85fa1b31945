"""/api/v1/org/api-keys: list, create, get and revoke the caller's organization's keys."""

from flask.views import MethodView

from apikeys import service
from apikeys.auth import authenticate, current_key
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
# Before the view runs, in this order: the request's key is verified, then the request
# spends one unit of that key's budget (its address's if it failed to authenticate).
blp.before_request(authenticate)
blp.before_request(spend_budget)
blp.after_request(show_budget)


#: OpenAPI links: what a client does next with a key it created or revoked. They are the
#: paths the contract fuzzer follows (create, get, use, revoke, get again).
_BY_ID = {"key_id": "$response.body#/id"}
CREATED_LINKS = {
    "GetKeyById": {"operationId": "getApiKey", "parameters": _BY_ID},
    "RevokeKey": {"operationId": "revokeApiKey", "parameters": _BY_ID},
    "CheckWithKey": {
        "operationRef": "#/paths/~1api~1v1~1auth~1check/get",
        "description": "Present the new key to the check, for one of its scopes.",
        "parameters": {
            "header.X-API-Key": "$response.body#/key",
            "header.X-Required-Scope": "$response.body#/scopes/0",
        },
    },
}
FOUND_LINKS = {"RevokeKey": {"operationId": "revokeApiKey", "parameters": _BY_ID}}
REVOKED_LINKS = {
    "GetRevokedKey": {
        "operationId": "getApiKey",
        "description": "A revoked key is gone: 404.",
        "parameters": {"key_id": "$request.path.key_id"},
    }
}


@blp.route("")
class ApiKeys(MethodView):
    @protected(blp, READ_API_KEYS)
    @blp.doc(operationId="listApiKeys")
    @blp.response(200, ApiKeyListSchema)
    def get(self):
        """List your organization's keys, newest first (revoked keys are left out)"""
        keys = service.list_keys(current_key().org_id)
        return {"data": keys, "total": len(keys)}

    @protected(blp, WRITE_API_KEYS, 400, 413)
    @blp.doc(operationId="createApiKey", responses={201: {"links": CREATED_LINKS}})
    @blp.arguments(ApiKeyCreateSchema, error_status_code=400)
    @blp.response(
        201, ApiKeyCreatedSchema, headers={"Cache-Control": {"schema": {"type": "string"}}}
    )
    def post(self, body):
        """Create a key: its secret is in this response and nowhere else, ever"""
        caller = current_key()
        created = service.create_key(
            caller.org_id, body["name"], body["scopes"], body["expires_in_days"], caller.scopes
        )
        return created, {"Cache-Control": "no-store"}


@blp.route("/<key_id>")
class ApiKeyById(MethodView):
    @protected(blp, READ_API_KEYS, 404)
    @blp.doc(operationId="getApiKey", responses={200: {"links": FOUND_LINKS}})
    @blp.response(200, ApiKeySchema)
    def get(self, key_id):
        """Get one of your organization's keys"""
        return service.get_key(current_key().org_id, key_id)

    @protected(blp, WRITE_API_KEYS, 404)
    @blp.doc(operationId="revokeApiKey", responses={204: {"links": REVOKED_LINKS}})
    @blp.response(204)
    def delete(self, key_id):
        """Revoke a key, for good; the next request that presents it fails"""
        service.revoke_key(current_key().org_id, key_id)
