"""Cursor pagination (apikeys/pagination.py): the query a listing reads and the fields it adds."""

from marshmallow import Schema, fields, validate

from apikeys.pagination import MAX_CURSOR_LENGTH, MAX_LIMIT
from schemas.fields import QueryInteger


class PageArgsSchema(Schema):
    limit = QueryInteger(
        validate=validate.Range(min=1, max=MAX_LIMIT),
        load_default=None,
        metadata={"description": f"At most this many items (1 to {MAX_LIMIT}). Omit for all."},
    )
    after = fields.String(
        validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH),
        load_default=None,
        metadata={
            "description": "The `next_cursor` of the previous page; a cursor this listing did "
            "not give your organization is 400 invalid_request. Items created after the "
            "first page may not show; none that stays is shown twice or left out.",
        },
    )


class PageSchema(Schema):
    """The fields every paginated listing has beside its ``data``."""

    has_more = fields.Boolean(metadata={"description": "Whether another page follows."})
    next_cursor = fields.String(
        allow_none=True,
        metadata={"description": "Pass as `after` for the next page; null on the last page."},
    )
