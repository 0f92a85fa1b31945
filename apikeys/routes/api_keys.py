"""/api/v1/org/api-keys: list, create, get, update, roll and revoke the caller's
organization's keys."""

from flask import current_app
from flask.views import MethodView

from apikeys import audit, key_limits, service
from apikeys.auth import authenticate, current_key
from apikeys.errors import InvalidScope, NameTaken, PolicyViolation
from apikeys.ratelimit import show_budget, spend_budget
from apikeys.routes import (
    BAD_PAGE,
    BUDGET_HEADERS,
    Blueprint,
    invalid_field,
    origin,
    protected,
)
from apikeys.scopes import READ_API_KEYS, WRITE_API_KEYS
from schemas.api_keys import (
    ApiKeyCreatedSchema,
    ApiKeyCreateSchema,
    ApiKeyListSchema,
    ApiKeyRolledSchema,
    ApiKeyRollSchema,
    ApiKeySchema,
    ApiKeyUpdateSchema,
)
from schemas.pagination import PageArgsSchema

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
blp.after_request(audit.prune_when_due)


#: OpenAPI links: what a client does next with a key it created, found, rolled or revoked.
#: They are the paths the contract fuzzer follows (create, get, update, roll, use, revoke).
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
FOUND_LINKS = {
    "RevokeKey": {"operationId": "revokeApiKey", "parameters": _BY_ID},
    "UpdateKey": {"operationId": "updateApiKey", "parameters": _BY_ID},
    "RollKey": {"operationId": "rollApiKey", "parameters": _BY_ID},
}
ROLLED_LINKS = {
    "CheckWithRolledKey": {
        **CREATED_LINKS["CheckWithKey"],
        "description": "Present the new secret to the check, for one of its scopes.",
    },
    "RevokeKey": {"operationId": "revokeApiKey", "parameters": _BY_ID},
}
NO_STORE = {"Cache-Control": {"schema": {"type": "string"}}}
REVOKED_LINKS = {
    "GetRevokedKey": {
        "operationId": "getApiKey",
        "description": "A revoked key is gone: 404.",
        "parameters": {"key_id": "$request.path.key_id"},
    }
}
#: The codes of a refused create or PATCH, and of a refused roll (SPEC 3, 11).
_BAD_EXPIRY = invalid_field(ApiKeyCreateSchema, "expires_in_days", 0)
_BAD_GRACE = invalid_field(ApiKeyRollSchema, "grace_period_seconds", -1)
CHANGE_REFUSED = {400: (_BAD_EXPIRY, InvalidScope, NameTaken, PolicyViolation)}
ROLL_REFUSED = {400: (_BAD_GRACE, PolicyViolation)}


@blp.route("")
class ApiKeys(MethodView):
    @protected(blp, READ_API_KEYS, 400, codes=BAD_PAGE)
    @blp.doc(operationId="listApiKeys")
    @blp.arguments(PageArgsSchema, location="query", error_status_code=400)
    @blp.response(200, ApiKeyListSchema, headers=BUDGET_HEADERS)
    def get(self, args):
        """List your organization's keys, newest first (revoked keys are left out)"""
        page, total = service.page_of_keys(current_key().org_id, args["limit"], args["after"])
        return page.listing(total)

    @protected(blp, WRITE_API_KEYS, 400, 413, codes=CHANGE_REFUSED)
    @blp.doc(operationId="createApiKey", responses={201: {"links": CREATED_LINKS}})
    @blp.arguments(ApiKeyCreateSchema, error_status_code=400)
    @blp.response(201, ApiKeyCreatedSchema, headers=NO_STORE | BUDGET_HEADERS)
    def post(self, body):
        """Create a key: its secret is in this response and nowhere else, ever"""
        caller = current_key()
        created = service.create_key(
            caller.org_id,
            body["name"],
            body["scopes"],
            body["expires_in_days"],
            caller.scopes,
            rate_limit=body["rate_limit"],
            rate_limit_cap=key_limits.cap(current_app.config),
            origin=origin(),
        )
        return created, {"Cache-Control": "no-store"}


@blp.route("/<key_id>")
class ApiKeyById(MethodView):
    @protected(blp, READ_API_KEYS, 404)
    @blp.doc(operationId="getApiKey", responses={200: {"links": FOUND_LINKS}})
    @blp.response(200, ApiKeySchema, headers=BUDGET_HEADERS)
    def get(self, key_id):
        """Get one of your organization's keys"""
        return service.get_key(current_key().org_id, key_id)

    @protected(blp, WRITE_API_KEYS, 404)
    @blp.doc(operationId="revokeApiKey", responses={204: {"links": REVOKED_LINKS}})
    @blp.response(204, headers=BUDGET_HEADERS)
    def delete(self, key_id):
        """Revoke a key, for good; the next request that presents it fails"""
        service.revoke_key(current_key().org_id, key_id, origin())

    @protected(blp, WRITE_API_KEYS, 400, 404, 413, codes=CHANGE_REFUSED)
    @blp.doc(operationId="updateApiKey")
    @blp.arguments(ApiKeyUpdateSchema, error_status_code=400)
    @blp.response(200, ApiKeySchema, headers=BUDGET_HEADERS)
    def patch(self, body, key_id):
        """Change a key's name, scopes, expiry or rate limit; the next request sees it"""
        caller = current_key()
        return service.update_key(
            caller.org_id,
            key_id,
            body,
            origin=origin(),
            grantor_scopes=caller.scopes,
            rate_limit_cap=key_limits.cap(current_app.config),
        )


@blp.route("/<key_id>/roll")
class RollApiKey(MethodView):
    @protected(blp, WRITE_API_KEYS, 400, 404, 413, codes=ROLL_REFUSED)
    @blp.doc(operationId="rollApiKey", responses={200: {"links": ROLLED_LINKS}})
    @blp.arguments(ApiKeyRollSchema, required=False, error_status_code=400)
    @blp.response(200, ApiKeyRolledSchema, headers=NO_STORE | BUDGET_HEADERS)
    def post(self, body, key_id):
        """Give a key a new secret; the old one works through the grace period, then never"""
        caller = current_key()
        rolled = service.roll_key(
            caller.org_id,
            key_id,
            body["grace_period_seconds"],
            origin=origin(),
            grantor_scopes=caller.scopes,
            by_previous_secret=caller.previous_secret,
        )
        return rolled, {"Cache-Control": "no-store"}
