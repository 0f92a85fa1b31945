"""The error object every failing response carries."""

from marshmallow import Schema, fields


class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"example": "name_taken"})
    message = fields.String(required=True)
    details = fields.Dict(metadata={"description": "Per-field problems, for invalid_request."})


class ErrorSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)
