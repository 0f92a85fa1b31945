"""Key secrets: generation, well-formedness, hashing. Nothing here touches storage."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

#: Fixed, greppable prefix so that secret scanners can spot leaked keys.
PREFIX = "evk_"
_ALPHABET = string.digits + string.ascii_letters
_ALPHABET_SET = frozenset(_ALPHABET)
_BODY_LENGTH = 32  # 32 base62 characters carry about 190 random bits.
CHECKSUM_LENGTH = 6  # a CRC32 in base62 fits in 6 characters.
SECRET_LENGTH = len(PREFIX) + _BODY_LENGTH + CHECKSUM_LENGTH


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


def hash_secret(secret: str) -> str:
    """The stored form of a secret: SHA-256 is right for high-entropy random keys."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hint(secret: str) -> str:
    """A non-secret label for listings: the prefix and the last four characters."""
    return f"{PREFIX}...{secret[-4:]}"


def new_id(kind: str) -> str:
    """An opaque, URL-safe identifier, independent of any secret."""
    return f"{kind}_" + "".join(secrets.choice(_ALPHABET) for _ in range(20))
