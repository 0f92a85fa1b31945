"""The scopes a key can hold, and the rules for granting them."""

from __future__ import annotations

from collections.abc import Iterable

from apikeys.errors import Forbidden, InvalidScope

#: Every scope, in the order the API reports them.
SCOPES: tuple[str, ...] = (
    "read:charge_points",
    "write:charge_points",
    "read:billing",
    "write:billing",
    "read:analytics",
    "write:webhooks",
    "read:sessions",
    "read:api_keys",
    "write:api_keys",
    "read:audit_log",
)
_ORDER = {scope: position for position, scope in enumerate(SCOPES)}

READ_API_KEYS = "read:api_keys"
WRITE_API_KEYS = "write:api_keys"
READ_AUDIT_LOG = "read:audit_log"


def normalize(requested: Iterable[str]) -> tuple[str, ...]:
    """Known scopes without duplicates, in catalogue order; InvalidScope names every unknown one."""
    requested = list(requested)
    unknown = sorted({scope for scope in requested if scope not in _ORDER})
    if unknown:
        # Quoted, so that an empty or blank entry still shows; cut short, so that the
        # answer stays small whatever the request holds.
        shown = (repr(scope[:64]) + ("..." if len(scope) > 64 else "") for scope in unknown)
        raise InvalidScope(f"Unrecognized scopes: {', '.join(shown)}")
    return tuple(sorted(set(requested), key=_ORDER.__getitem__))


def ensure_grantable(
    requested: Iterable[str],
    held: Iterable[str],
    refusal: str = "Your key cannot grant scopes it does not hold",
) -> None:
    """A key can never grant more than it holds: Forbidden names what is missing."""
    missing = [scope for scope in requested if scope not in set(held)]
    if missing:
        raise Forbidden(f"{refusal}: {', '.join(missing)}")


def serialize(scopes: Iterable[str]) -> str:
    return " ".join(scopes)


def deserialize(stored: str) -> tuple[str, ...]:
    return tuple(stored.split())
