"""Fields stricter than marshmallow's defaults."""

from __future__ import annotations

import unicodedata

from marshmallow import ValidationError, fields

#: RFC 3339, UTC, second precision, ``Z`` suffix; stored datetimes are naive UTC.
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


class Timestamp(fields.DateTime):
    """Written as RFC 3339; left ISO for marshmallow so that OpenAPI documents a date-time."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.strftime(RFC3339)


class StrictInteger(fields.Integer):
    """An integer that refuses strings, floats and booleans."""

    def __init__(self, **kwargs) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


#: The zero-width joiner and non-joiner: emoji sequences and Persian names need them.
_JOINERS = frozenset("\u200c\u200d")


def _invisible(char: str) -> bool:
    """Control and format characters (bidi overrides, zero-width spaces) but the joiners:
    they make one name display as another."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") and char not in _JOINERS


class Label(fields.String):
    """A human label: trimmed, not blank, no control characters."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs).strip()
        if not value:
            raise ValidationError("Must not be blank.")
        if any(_invisible(char) for char in value):
            raise ValidationError("Must not contain control characters.")
        return value
