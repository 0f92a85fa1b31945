"""Fields stricter than marshmallow's defaults."""

from __future__ import annotations

import re
import unicodedata

from marshmallow import ValidationError, fields, validate

from apikeys import crypto

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


_DIGITS = re.compile(r"[0-9]+")


class QueryInteger(fields.Integer):
    """A whole number in a query string: ASCII digits only. int() also takes a sign,
    surrounding white space, underscores and the digits of every other script."""

    default_error_messages = {"invalid": "Not a valid integer: digits 0-9 only."}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


#: The zero-width joiner and non-joiner: emoji sequences and Persian names need them.
_JOINERS = frozenset("\u200c\u200d")

#: Letters and symbols that display as nothing: Hangul fillers, the blank Braille pattern,
#: the musical null notehead. Default-ignorable marks (variation selectors, the combining
#: grapheme joiner, the Khmer inherent vowels) are marks, which never count as visible.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\U0001d159")


#: The line and paragraph separators (the whole of categories Zl and Zp): refused anywhere,
#: even at an end where trimming would drop them, since they split logs and tables.
_SEPARATORS = frozenset("\u2028\u2029")


def _invisible(char: str) -> bool:
    """Control and format characters (bidi overrides, zero-width spaces) but the joiners:
    they make one name display as another."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") and char not in _JOINERS


def _visible(char: str) -> bool:
    """A letter, digit, punctuation mark or symbol that shows: not white space, not a mark
    on its own, not an unassigned or private code point, not a blank."""
    return unicodedata.category(char)[0] in "LNPS" and char not in _BLANKS


class Label(fields.String):
    """A human label: trimmed, no control characters or line breaks, at least one
    character that shows, and no key or anything that looks like one (a label is shown to
    others; a secret is shown once)."""

    def deserialize(self, value, attr=None, data=None, **kwargs):
        label = super().deserialize(value, attr, data, **kwargs)
        # Read for keys after the field's validators: a label too long to keep is not.
        if isinstance(label, str) and crypto.contains_secret(label):
            raise ValidationError("Must not contain an API key or anything that looks like one.")
        return label

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if _SEPARATORS.intersection(value):
            raise ValidationError("Must not contain line or paragraph separators.")
        value = value.strip()
        if any(_invisible(char) for char in value):
            raise ValidationError("Must not contain control characters.")
        if not any(_visible(char) for char in value):
            raise ValidationError("Must not be blank.")
        return value


#: The longest name, in characters, of a key or an organization.
MAX_NAME_LENGTH = 128


def clean_name(value: str) -> str:
    """A key's or an organization's name by the API's rules, trimmed, wherever it comes
    from (the CLI, the environment); ValidationError says what is wrong with it."""
    return Label(validate=validate.Length(min=1, max=MAX_NAME_LENGTH)).deserialize(value)


class BoundedList(fields.List):
    """A list with at most ``max_items`` entries, counted before any entry is read: a huge
    list costs one error, not one per entry."""

    def __init__(self, cls_or_instance, *, max_items: int, **kwargs) -> None:
        super().__init__(cls_or_instance, **kwargs)
        self.max_items = max_items
        # Also what the OpenAPI document shows as maxItems.
        self.validators.append(validate.Length(max=max_items))

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, list) and len(value) > self.max_items:
            raise ValidationError(f"At most {self.max_items} entries.")
        return super()._deserialize(value, attr, data, **kwargs)
