"""Key secrets: generation, well-formedness, hashing. Nothing here touches storage."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Iterator

#: Fixed, greppable prefix so that secret scanners can spot leaked keys.
PREFIX = "evk_"
_ALPHABET = string.digits + string.ascii_letters
_ALPHABET_SET = frozenset(_ALPHABET)
_BODY_LENGTH = 32  # 32 base62 characters carry about 190 random bits.
CHECKSUM_LENGTH = 6  # a CRC32 in base62 fits in 6 characters.
SECRET_LENGTH = len(PREFIX) + _BODY_LENGTH + CHECKSUM_LENGTH
#: What stands in for a key, or part of one, wherever text is shown or written.
MASK = "[redacted]"
#: A key, or what is left of one: the prefix and the base62 characters after it.
_KEY = re.compile(re.escape(PREFIX) + "[A-Za-z0-9]*", re.IGNORECASE)
#: Runs of base62 long enough to hold what follows a key's prefix: its body and checksum.
BARE_LENGTH = _BODY_LENGTH + CHECKSUM_LENGTH
_BASE62_RUN = re.compile(f"[0-9A-Za-z]{{{BARE_LENGTH},}}")
_ID_BODY_LENGTH = 20  # base62 characters after an id's kind, about 119 random bits


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32((PREFIX + body).encode()), CHECKSUM_LENGTH)


def generate_secret() -> str:
    """A new secret: prefix, random base62 body from `secrets`, CRC32 checksum."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LENGTH))
    return PREFIX + body + _checksum(body)


def is_well_formed(secret: str) -> bool:
    """Whether a string has the shape and checksum of a key: no storage needed to reject typos."""
    if len(secret) != SECRET_LENGTH or not secret.startswith(PREFIX):
        return False
    # Checksum characters too: compare_digest raises on non-ASCII strings.
    if not _ALPHABET_SET.issuperset(secret[len(PREFIX) :]):
        return False
    body = secret[len(PREFIX) : -CHECKSUM_LENGTH]
    return hmac.compare_digest(secret[-CHECKSUM_LENGTH:], _checksum(body))


def contains_secret(text: str) -> bool:
    """Whether ``text`` holds a key or what looks like one: the prefix in any case (as the
    logs mask it), or a key's body and checksum without it, inside any run of base62."""
    return PREFIX in text.lower() or next(_bare_keys(text), None) is not None


def masked_bare(text: str) -> str:
    """``text`` with every key's body and checksum masked, prefix or not (``masked`` does
    the cheaper part)."""
    pieces, shown = [], 0
    for start, end in _bare_keys(text):
        if start >= shown:
            pieces += [text[shown:start], MASK]
            shown = end
    return "".join(pieces) + text[shown:] if pieces else text


def _bare_keys(text: str) -> Iterator[tuple[int, int]]:
    """Where in ``text`` a key's body and checksum stand, as (start, end)."""
    for run in _BASE62_RUN.finditer(text):
        chars, offset = run.group(), run.start()
        # The checksum covers the prefix too, so a window whose checksum holds is a key with
        # its prefix cut off; an ordinary run passes by chance once in 62**6 windows.
        for end in range(_BODY_LENGTH, len(chars) - CHECKSUM_LENGTH + 1):
            if chars[end : end + CHECKSUM_LENGTH] == _checksum(chars[end - _BODY_LENGTH : end]):
                yield offset + end - _BODY_LENGTH, offset + end + CHECKSUM_LENGTH


def masked(text: str) -> str:
    """``text`` with every key in it, or part of one, masked: whatever follows the prefix.
    Every key of the service, whole, cut short or mistyped, starts with it: it is what the
    prefix is for (``contains_secret`` also finds a key without it, at a higher cost)."""
    # The plain test first: a case-blind regex takes five times as long on a clean line.
    if PREFIX not in text.lower():
        return text
    return _KEY.sub(MASK, text)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256 is right for high-entropy random keys."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hint(secret: str) -> str:
    """A non-secret label for listings: the prefix and the last four characters."""
    return f"{PREFIX}...{secret[-4:]}"


def new_id(kind: str) -> str:
    """An opaque, URL-safe identifier, independent of any secret."""
    return f"{kind}_" + "".join(secrets.choice(_ALPHABET) for _ in range(_ID_BODY_LENGTH))


def is_id(value: str, kind: str) -> bool:
    """Whether ``value`` has the form of ``new_id(kind)``."""
    body = value.removeprefix(f"{kind}_")
    return body != value and len(body) == _ID_BODY_LENGTH and _ALPHABET_SET.issuperset(body)
