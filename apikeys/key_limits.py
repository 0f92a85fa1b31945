"""Each key's own rate limit: its syntax, the operator's cap on it, and the limit spent.

A key's ``rate_limit`` is one limit or several in flask-limiter's syntax, separated by
``;`` (``"10/second;500/minute"``), like ``RATE_LIMIT_PER_KEY``; every one of them
applies. ``None`` means the service's ``RATE_LIMIT_PER_KEY``.

The cap, ``RATE_LIMIT_MAX_PER_KEY`` (by default ``RATE_LIMIT_PER_KEY``), is exceeded when,
over the length of one of the cap's windows, the key's limits together let through more
requests than that cap's amount. One limit of N per window W lets through N × (cap
window ÷ W) over a longer cap window, and all N over a shorter one (they may all come at
once); several limits let through the least of what each does. Against a cap of
1000/minute: 16/second (960) and 1000/hour (1000) are within it; 17/second (1020),
1001/hour and 2000/day are not; 100/second;900/minute (900) is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from limits import RateLimitItem, parse_many

#: Each limit costs a Redis round trip per request: a few suffice for any real policy.
MAX_LIMITS = 4
_ONE = (
    r"[1-9][0-9]{0,8} ?(?:/|per) ?(?:[1-9][0-9]{0,3} ?)?"
    r"(?:second|minute|hour|day|month|year)s?"
)
#: The syntax of a key's ``rate_limit``, as the OpenAPI document states it: flask-limiter's,
#: with ``;`` between limits, each allowing at least one request.
PATTERN = rf"^{_ONE}(?: ?; ?{_ONE}){{0,{MAX_LIMITS - 1}}}$"


def parse(text: str) -> list[RateLimitItem]:
    """The limits ``text`` states; ValueError says what is wrong with it."""
    if not re.fullmatch(PATTERN, text):
        raise ValueError(
            "Not a rate limit: write one such as '100/minute' or '100 per 2 hours', or up "
            f"to {MAX_LIMITS} separated by ';' such as '10/second;500/minute'."
        )
    return parse_many(text)


def _let_through(items: Sequence[RateLimitItem], seconds: int) -> Fraction:
    """The most requests ``items`` together let through in ``seconds``."""
    return min(
        item.amount * max(Fraction(1), Fraction(seconds, item.get_expiry())) for item in items
    )


@functools.lru_cache(maxsize=256)
def exceeds(limit: str, cap: str) -> bool:
    """Whether the limits ``limit`` states exceed the cap (the module's docstring)."""
    items = parse_many(limit)
    return any(_let_through(items, most.get_expiry()) > most.amount for most in parse_many(cap))


def cap(config: Mapping[str, Any]) -> str:
    """The most a key's own limit may allow."""
    return config["RATE_LIMIT_MAX_PER_KEY"] or config["RATE_LIMIT_PER_KEY"]


@functools.lru_cache(maxsize=256)
def _spent(limit: str | None, default: str, most: str) -> str:
    if limit is None:
        return default
    # Set under a higher cap than today's: the operator's lowered cap binds as well.
    return f"{limit};{most}" if exceeds(limit, most) else limit


def spent(limit: str | None, config: Mapping[str, Any]) -> str:
    """The limits a key with ``limit`` spends its budget against."""
    return _spent(limit, config["RATE_LIMIT_PER_KEY"], cap(config))
