"""The API key resources: what the list, get, create, update, roll and revoke endpoints
read and return."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from apikeys import key_limits
from apikeys.scopes import SCOPES
from schemas.fields import MAX_NAME_LENGTH, BoundedList, Label, StrictInteger, Timestamp
from schemas.pagination import PageSchema

#: Room for every scope, repeated: duplicates are collapsed, so a list a little longer than
#: the catalogue is legitimate; a longer one is refused before its entries are read.
MAX_SCOPES = 64


def scope() -> fields.String:
    """A scope name; the document lists the catalogue as its enum."""
    return fields.String(metadata={"enum": list(SCOPES)})


def _valid_rate_limit(value: str) -> None:
    try:
        key_limits.parse(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def rate_limit_field(**kwargs) -> fields.String:
    """A key's own rate limit, as given; null for the service's default."""
    return fields.String(
        allow_none=True,
        validate=_valid_rate_limit,
        metadata={
            "description": "flask-limiter syntax: one limit or up to four separated by ';', "
            "every one of them applied. null: the service's default (RATE_LIMIT_PER_KEY). "
            "At most RATE_LIMIT_MAX_PER_KEY, else 400 invalid_request.",
            "pattern": key_limits.PATTERN,
            "example": "100/minute",
        },
        **kwargs,
    )


def name_field(**kwargs) -> Label:
    return Label(
        validate=validate.Length(min=1, max=MAX_NAME_LENGTH),
        metadata={
            "description": "Unique among your organization's live keys. Trimmed; at least "
            "one visible letter, digit, punctuation mark or symbol; no control, invisible "
            "format or line-separator characters (the zero-width joiner and non-joiner "
            "excepted). No API key or anything that looks like one: the evk_ prefix in any "
            "case, or a key's 38 characters after it.",
            # Named, since no pattern says it plainly; the contract test generates it.
            "format": "label",
            "example": "CI Pipeline",
        },
        **kwargs,
    )


def scopes_field(description: str = "", **kwargs) -> BoundedList:
    # The enum is for the document only (clients and fuzzers build valid bodies from it):
    # an unknown scope is the domain's 400 invalid_scope, not a validation error.
    return BoundedList(
        scope(),
        max_items=MAX_SCOPES,
        validate=validate.Length(min=1),
        metadata={
            "description": f"{description}Duplicates are collapsed. An unknown scope is "
            "400 invalid_scope.",
            "example": ["read:charge_points"],
        },
        **kwargs,
    )


def expiry_field(description: str, **kwargs) -> StrictInteger:
    return StrictInteger(
        allow_none=True,
        validate=validate.Range(min=1, max=3650),
        metadata={"description": description},
        **kwargs,
    )


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
    rate_limit = fields.String(
        allow_none=True,
        metadata={"description": "The key's own rate limit; null: the service's default."},
    )
    previous_key_expires_at = Timestamp(
        attribute="previous_key_valid_until",
        allow_none=True,
        metadata={
            "description": "Until when the secret a roll replaced still works; null when "
            "no previous secret works."
        },
    )


class ApiKeyListSchema(PageSchema):
    data = fields.List(fields.Nested(ApiKeySchema))
    total = fields.Integer(
        metadata={"description": "The organization's non-revoked keys, on every page."}
    )


class ApiKeyCreateSchema(Schema):
    name = name_field(required=True)
    scopes = scopes_field(required=True)
    expires_in_days = expiry_field("Omit or null for a key that never expires.", load_default=None)
    rate_limit = rate_limit_field(load_default=None)


class ApiKeyUpdateSchema(Schema):
    """What a PATCH changes: any of the fields, at least one; the others stay."""

    name = name_field()
    scopes = scopes_field("Replaces the key's scopes. ")
    expires_in_days = expiry_field("Days from now; null for a key that never expires.")
    rate_limit = rate_limit_field()

    @validates_schema
    def _not_empty(self, data, **kwargs):
        if not data:
            raise ValidationError(
                f"Give one or more of {', '.join(self.fields)}.", field_name="body"
            )


class ApiKeyRollSchema(Schema):
    grace_period_seconds = StrictInteger(
        load_default=0,
        validate=validate.Range(min=0, max=604_800),
        metadata={
            "description": "How long the current secret keeps working beside the new one: "
            "0 (the default) ends it now; at most 7 days."
        },
    )


class ApiKeyCreatedSchema(Schema):
    """A new key: the only response that ever carries the secret."""

    id = fields.String()
    name = fields.String()
    key = fields.String(metadata={"description": "The secret. Shown only here: save it now."})
    scopes = fields.List(scope())
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)
    rate_limit = fields.String(allow_none=True)


class ApiKeyRolledSchema(ApiKeySchema):
    """A rolled key: the only response but creation's that carries a secret."""

    key = fields.String(metadata={"description": "The new secret. Shown only here: save it now."})
    previous_key_expires_at = Timestamp(
        attribute="previous_key_valid_until",
        metadata={"description": "When the previous secret stops working (now, for no grace)."},
    )
