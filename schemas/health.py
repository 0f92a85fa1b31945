"""What the health endpoints answer."""

from marshmallow import Schema, fields


class StatusSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
