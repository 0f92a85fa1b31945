"""What the forward-auth check answers when it lets a request through."""

from marshmallow import Schema, fields


class CheckSchema(Schema):
    """The key that authenticated, also sent as the X-Auth-* headers."""

    org_id = fields.String(metadata={"description": "Also in X-Auth-Org-Id."})
    key_id = fields.String(metadata={"description": "Also in X-Auth-Key-Id."})
    scopes = fields.List(
        fields.String(),
        metadata={"description": "Also in X-Auth-Scopes, space-separated."},
    )
