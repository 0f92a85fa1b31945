"""Cursor pagination of a newest-first listing, ordered by (a time, an id), both descending.

A cursor names a position, the (time, id) of the last row shown, not a row: the next
page is every row strictly after it in that order (keyset pagination). So a cursor stays
valid while rows are added and removed: rows that were there when the listing began and
are still there at its end are each shown exactly once, whatever was created or revoked
between pages, the row the cursor came from included.

The cursor is opaque to clients: base64url of a small JSON array, the time (always to the
microsecond), the id, and a check that ties the two to the listing and the organization
the cursor was given for. The check is a digest, not a signature: it is not secret, and
needs none, since a cursor only ever narrows a query that is already limited to the
caller's organization, so a forged one can show nothing a client could not list anyway.
It makes a cursor of another listing or organization, or one altered or made up, a 400
rather than a quietly wrong page: a cursor is accepted only if it is exactly what
``encode`` writes for its position in this listing of this organization.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import Field, ModelSelect

from apikeys import crypto
from apikeys.errors import InvalidRequest

MAX_LIMIT = 1000
#: Far above any cursor the service writes (about 95 characters): a longer one is refused
#: before it is decoded.
MAX_CURSOR_LENGTH = 256
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")
_CHECK_BYTES = 8


@dataclass(frozen=True)
class Listing:
    """A newest-first listing of rows ordered by ``time`` then ``key``, both descending,
    whose ids are ``crypto.new_id(kind)``; ``name`` sets its cursors apart from any other
    listing's."""

    name: str
    time: Field
    key: Field
    kind: str


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
    listing: Listing, query: ModelSelect, owner: str, limit: int | None, after: str | None
) -> Page:
    """The page of ``query`` (the rows of ``listing`` that the organization ``owner`` may
    see) after the cursor ``after``; ``limit`` rows at most, or every remaining row when
    None."""
    time, key = listing.time, listing.key
    if after is not None:
        moment, last = decode(listing, owner, after)
        # The first term alone bounds an index range on time; the second breaks ties.
        query = query.where((time <= moment) & ((time < moment) | (key < last)))
    if limit is None:
        return Page(list(query), False, None)
    rows = list(query.limit(limit + 1))  # one more than shown tells whether there is more
    if len(rows) <= limit:
        return Page(rows, False, None)
    rows = rows[:limit]
    last_row = rows[-1]
    next_cursor = encode(listing, owner, getattr(last_row, time.name), getattr(last_row, key.name))
    return Page(rows, True, next_cursor)


def encode(listing: Listing, owner: str, moment: datetime, key: str) -> str:
    """The cursor after the row with this time and id, in ``owner``'s ``listing``."""
    written = moment.isoformat(timespec="microseconds")
    raw = json.dumps([written, key, _check(listing, owner, written, key)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(listing: Listing, owner: str, cursor: str) -> tuple[datetime, str]:
    """The (time, id) a cursor names; InvalidRequest for anything ``encode`` did not write
    for ``owner``'s ``listing``."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR.fullmatch(cursor):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("ascii"))
        if not (isinstance(value, list) and len(value) == 3):
            raise ValueError
        written, key, check = value
        if not (isinstance(written, str) and isinstance(key, str) and isinstance(check, str)):
            raise ValueError
        if not crypto.is_id(key, listing.kind):
            raise ValueError
        moment = datetime.fromisoformat(written)
        # The time in the one form encode writes, and the check of this listing and
        # organization: written again, the cursor must come out the same, to the byte.
        if encode(listing, owner, moment, key) != cursor:
            raise ValueError
    except ValueError:  # bad base64 (binascii.Error), ASCII, JSON or date alike
        raise InvalidRequest(
            "The cursor is not one this listing gave your organization; start again "
            "without `after`",
            details={"after": ["Not a valid cursor."]},
        ) from None
    return moment, key


def _check(listing: Listing, owner: str, written: str, key: str) -> str:
    """What ties a position to its listing and organization (a digest; see above)."""
    framed = json.dumps([listing.name, owner, written, key]).encode()
    digest = hashlib.blake2b(framed, digest_size=_CHECK_BYTES, person=b"apikeys.cursor")
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")
