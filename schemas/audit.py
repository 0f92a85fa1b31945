"""The audit log: what GET /api/v1/org/audit-events returns."""

from marshmallow import Schema, fields, post_dump

from apikeys.audit import ACTIONS, ACTORS
from schemas.fields import Timestamp
from schemas.pagination import PageSchema


class ActorSchema(Schema):
    type = fields.String(metadata={"enum": list(ACTORS)})
    key_id = fields.String(
        metadata={"description": "The key that made the change; only when type is key."}
    )

    @post_dump
    def _without_key(self, data, **kwargs):
        if data.get("key_id") is None:
            data.pop("key_id", None)
        return data


class TargetSchema(Schema):
    key_id = fields.String()


class ChangeSchema(Schema):
    from_ = fields.Raw(attribute="from", data_key="from", allow_none=True)
    to = fields.Raw(allow_none=True)


class AuditEventSchema(Schema):
    """One change to a key: never a secret (a key found in any text is [redacted])."""

    id = fields.String()
    time = Timestamp()
    action = fields.String(metadata={"enum": list(ACTIONS)})
    actor = fields.Nested(ActorSchema)
    target = fields.Nested(TargetSchema)
    changes = fields.Dict(
        keys=fields.String(),
        values=fields.Nested(ChangeSchema),
        attribute="changed",
        allow_none=True,
        metadata={"description": "For updates: each changed field's from and to; else null."},
    )
    request_id = fields.String(
        allow_none=True, metadata={"description": "The change's X-Request-ID; null outside HTTP."}
    )
    client_addr = fields.String(
        allow_none=True,
        metadata={
            "description": "The client's address as the service sees it (through "
            "APIKEYS_TRUSTED_PROXIES); null outside HTTP."
        },
    )
    user_agent = fields.String(
        allow_none=True, metadata={"description": "The client's User-Agent; null if none."}
    )


class AuditEventListSchema(PageSchema):
    data = fields.List(fields.Nested(AuditEventSchema))
    total = fields.Integer(
        metadata={"description": "The organization's events within retention, on every page."}
    )
