"""The API key resources: what the list, get, create and revoke endpoints read and return."""

from marshmallow import Schema, fields, validate

from schemas.fields import Label, StrictInteger, Timestamp


class ApiKeySchema(Schema):
    """An API key as listed: never its secret."""

    id = fields.String(metadata={"description": "Use this id to revoke the key."})
    name = fields.String()
    key_hint = fields.String(
        metadata={"description": "Not secret: the key's prefix and its last four characters."}
    )
    scopes = fields.List(fields.String())
    created_at = Timestamp()
    last_used_at = Timestamp(
        allow_none=True, metadata={"description": "null if the key has never been used."}
    )
    expires_at = Timestamp(
        allow_none=True, metadata={"description": "null for keys with no expiration."}
    )


class ApiKeyListSchema(Schema):
    data = fields.List(fields.Nested(ApiKeySchema))
    total = fields.Integer(metadata={"description": "The organization's non-revoked keys."})


class ApiKeyCreateSchema(Schema):
    name = Label(
        required=True,
        validate=validate.Length(min=1, max=128),
        metadata={
            "description": "Unique among your organization's keys.",
            "example": "CI Pipeline",
        },
    )
    scopes = fields.List(
        fields.String(),
        required=True,
        validate=validate.Length(min=1),
        metadata={"example": ["read:charge_points"]},
    )
    expires_in_days = StrictInteger(
        allow_none=True,
        load_default=None,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": "Omit or null for a key that never expires."},
    )


class ApiKeyCreatedSchema(Schema):
    """A new key: the only response that ever carries the secret."""

    id = fields.String()
    name = fields.String()
    key = fields.String(metadata={"description": "The secret. Shown only here: save it now."})
    scopes = fields.List(fields.String())
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)
