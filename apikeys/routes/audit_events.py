"""/api/v1/org/audit-events: who changed which of the organization's keys, and when."""

from flask import current_app
from flask.views import MethodView

from apikeys import audit
from apikeys.auth import authenticate, current_key
from apikeys.ratelimit import show_budget, spend_budget
from apikeys.routes import BAD_PAGE, BUDGET_HEADERS, Blueprint, protected
from apikeys.scopes import READ_AUDIT_LOG
from schemas.audit import AuditEventListSchema
from schemas.pagination import PageArgsSchema

blp = Blueprint(
    "audit_events",
    __name__,
    url_prefix="/api/v1/org/audit-events",
    description="Your organization's audit log: every change to its keys.",
)
blp.before_request(authenticate)
blp.before_request(spend_budget)
blp.after_request(show_budget)
blp.after_request(audit.prune_when_due)


@blp.route("")
class AuditEvents(MethodView):
    @protected(blp, READ_AUDIT_LOG, 400, codes=BAD_PAGE)
    @blp.doc(operationId="listAuditEvents")
    @blp.arguments(PageArgsSchema, location="query", error_status_code=400)
    @blp.response(200, AuditEventListSchema, headers=BUDGET_HEADERS)
    def get(self, args):
        """List your organization's audit events, newest first"""
        retention = current_app.config["AUDIT_RETENTION_DAYS"]
        page, total = audit.events(current_key().org_id, retention, args["limit"], args["after"])
        return page.listing(total)
