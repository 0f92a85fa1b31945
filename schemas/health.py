"""What the health endpoints answer."""

from marshmallow import Schema, fields


class StatusSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(StatusSchema):
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={
            "description": "database: ok; redis: ok, down, refusing writes, not configured or "
            "disabled (without Redis, limits are counted in each process's memory).",
            "example": {"database": "ok", "redis": "ok"},
        },
    )
