"""Cursor pagination of a newest-first listing, ordered by (a time, an id), both descending.

A cursor names a position, the (time, id) of the last row shown, not a row: the next
page is every row strictly after it in that order (keyset pagination). So a cursor stays
valid while rows are added and removed: rows that were there when the listing began and
are still there at its end are each shown exactly once, whatever was created or revoked
between pages, the row the cursor came from included.

The cursor is opaque to clients (base64url of a small JSON array) but not secret: it
only ever narrows a query that is already limited to the caller's organization, so a
forged one can show nothing a client could not list anyway. Anything the service did not
write is refused as ``InvalidRequest``.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import Field, ModelSelect

from apikeys.errors import InvalidRequest

MAX_LIMIT = 1000
#: Far above any cursor the service writes (about 70 characters): a longer one is refused
#: before it is decoded.
MAX_CURSOR_LENGTH = 256
_CURSOR = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_ID = re.compile(r"[A-Za-z0-9_]{1,40}")


@dataclass(frozen=True)
class Page:
    """One page of rows, and where the next one starts (None after the last)."""

    rows: list[Any]
    has_more: bool
    next_cursor: str | None

    def listing(self, total: int) -> dict[str, Any]:
        """The page as a listing's body: ``data``, ``total``, ``has_more``, ``next_cursor``."""
        return {
            "data": self.rows,
            "total": total,
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


def paginate(
    query: ModelSelect, time: Field, key: Field, limit: int | None, after: str | None
) -> Page:
    """The page of ``query`` (ordered by ``time`` then ``key``, both descending) after the
    cursor ``after``; ``limit`` rows at most, or every remaining row when None."""
    if after is not None:
        moment, last = decode(after)
        # The first term alone bounds an index range on time; the second breaks ties.
        query = query.where((time <= moment) & ((time < moment) | (key < last)))
    if limit is None:
        return Page(list(query), False, None)
    rows = list(query.limit(limit + 1))  # one more than shown tells whether there is more
    if len(rows) <= limit:
        return Page(rows, False, None)
    rows = rows[:limit]
    last_row = rows[-1]
    return Page(rows, True, encode(getattr(last_row, time.name), getattr(last_row, key.name)))


def encode(moment: datetime, key: str) -> str:
    """The cursor after the row with this time and id."""
    raw = json.dumps([moment.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """The (time, id) a cursor names; InvalidRequest for anything the service did not write."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR.fullmatch(cursor):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
        if not (isinstance(value, list) and len(value) == 2):
            raise ValueError
        moment, key = value
        if not (isinstance(moment, str) and isinstance(key, str) and _ID.fullmatch(key)):
            raise ValueError
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is not None:
            raise ValueError
    except ValueError:  # bad base64 (binascii.Error), UTF-8, JSON or date alike
        raise InvalidRequest(
            "The cursor is not one this listing gave; start again without `after`",
            details={"after": ["Not a valid cursor."]},
        ) from None
    return parsed, key
