"""The API key resources: what the list, get, create and revoke endpoints read and return."""

from marshmallow import Schema, fields, validate

from apikeys.scopes import SCOPES
from schemas.fields import MAX_NAME_LENGTH, BoundedList, Label, StrictInteger, Timestamp
from schemas.pagination import PageSchema

#: Room for every scope, repeated: duplicates are collapsed, so a list a little longer than
#: the catalogue is legitimate; a longer one is refused before its entries are read.
MAX_SCOPES = 64


def scope() -> fields.String:
    """A scope name; the document lists the catalogue as its enum."""
    return fields.String(metadata={"enum": list(SCOPES)})


class ApiKeySchema(Schema):
    """An API key as listed: never its secret."""

    id = fields.String(metadata={"description": "Use this id to revoke the key."})
    name = fields.String()
    key_hint = fields.String(
        metadata={"description": "Not secret: the key's prefix and its last four characters."}
    )
    scopes = fields.List(scope())
    created_at = Timestamp()
    last_used_at = Timestamp(
        allow_none=True, metadata={"description": "null if the key has never been used."}
    )
    expires_at = Timestamp(
        allow_none=True, metadata={"description": "null for keys with no expiration."}
    )


class ApiKeyListSchema(PageSchema):
    data = fields.List(fields.Nested(ApiKeySchema))
    total = fields.Integer(
        metadata={"description": "The organization's non-revoked keys, on every page."}
    )


class ApiKeyCreateSchema(Schema):
    name = Label(
        required=True,
        validate=validate.Length(min=1, max=MAX_NAME_LENGTH),
        metadata={
            "description": "Unique among your organization's live keys. Trimmed; at least "
            "one visible letter, digit, punctuation mark or symbol; no control, invisible "
            "format or line-separator characters (the zero-width joiner and non-joiner "
            "excepted).",
            # Named, since no pattern says it plainly; the contract test generates it.
            "format": "label",
            "example": "CI Pipeline",
        },
    )
    scopes = BoundedList(
        # The enum is for the document only (clients and fuzzers build valid bodies from
        # it): an unknown scope is the domain's 400 invalid_scope, not a validation error.
        scope(),
        max_items=MAX_SCOPES,
        required=True,
        validate=validate.Length(min=1),
        metadata={
            "description": "Duplicates are collapsed. An unknown scope is 400 invalid_scope.",
            "example": ["read:charge_points"],
        },
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
    scopes = fields.List(scope())
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)
