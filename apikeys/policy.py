"""Which scope a request needs: an ordered route-to-scope policy, built in or read from a file.

A policy file has one rule per line, ``METHODS PATTERN SCOPE``, separated by whitespace::

    # Reads of charge points need read:charge_points
    GET,HEAD,OPTIONS  /api/v1/charge_points/**  read:charge_points
    *                 /api/v1/webhooks/**        write:webhooks

- METHODS: ``*`` (every method below) or a comma-separated list of GET, HEAD, OPTIONS,
  POST, PUT, PATCH, DELETE. Any other method is always denied.
- PATTERN: an absolute path of literal segments; ``*`` stands for exactly one segment,
  and ``**``, only as the last segment, for the path itself and anything below it.
  Matching is case-sensitive, as paths are.
- SCOPE: one of the scopes in ``apikeys.scopes.SCOPES``.
- ``#`` starts a comment; blank lines are ignored.

The first rule that matches decides; a request no rule matches is denied. A file replaces
the built-in policy as a whole, so that what applies is what the operator reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from apikeys.config import ConfigError
from apikeys.scopes import SCOPES

READ_METHODS = ("GET", "HEAD", "OPTIONS")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
METHODS = READ_METHODS + WRITE_METHODS

# Webhooks have only a write scope: "create and manage webhook endpoints", which covers
# listing them. Analytics and sessions have only read scopes, so writes to them match no
# rule and are denied.
DEFAULT_TEXT = """\
GET,HEAD,OPTIONS       /api/v1/charge_points/**  read:charge_points
POST,PUT,PATCH,DELETE  /api/v1/charge_points/**  write:charge_points
GET,HEAD,OPTIONS       /api/v1/billing/**        read:billing
POST,PUT,PATCH,DELETE  /api/v1/billing/**        write:billing
GET,HEAD,OPTIONS       /api/v1/analytics/**      read:analytics
*                      /api/v1/webhooks/**       write:webhooks
GET,HEAD,OPTIONS       /api/v1/sessions/**       read:sessions
GET,HEAD,OPTIONS       /api/v1/org/api-keys/**   read:api_keys
POST,PUT,PATCH,DELETE  /api/v1/org/api-keys/**   write:api_keys
GET,HEAD,OPTIONS       /api/v1/org/audit-events/** read:audit_log
"""

_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()+,;=:@-]+")
# Encoded "/", "\" and NUL would let one path read differently here and at the backend;
# raw whitespace is never part of a request target (it is two joined header values).
_REFUSED_RAW = re.compile(r"%(2f|5c|00)|\s", re.IGNORECASE)
# After one decoding: a "%" left means double encoding, a backslash is a separator to
# some servers, ";" starts path parameters (Tomcat reads "..;" as ".."), and control
# characters have no place in a path.
_REFUSED_DECODED = re.compile(r"[\x00-\x1f\x7f\\%;]")
_ABSOLUTE_FORM = re.compile(r"^https?://[^/?#]*", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """Requests with one of ``methods`` to a path ``pattern`` matches need ``scope``."""

    methods: frozenset[str]
    pattern: str
    scope: str
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once, here: a lookup is then one regex match per candidate rule.
        object.__setattr__(self, "regex", _compile(self.pattern))

    def matches(self, path: str) -> bool:
        """Whether ``path``, already normalized, is one this rule covers."""
        return self.regex.fullmatch(path) is not None


class Policy:
    """An ordered list of rules; the first that matches a request decides its scope."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        # Looked up per request: each method's rules, in order, computed once.
        self._by_method = {
            method: tuple(rule for rule in self.rules if method in rule.methods)
            for method in METHODS
        }

    def required_scope(self, method: str, raw_uri: str) -> str | None:
        """The scope a ``method`` request to ``raw_uri`` needs; None if it is denied."""
        rules = self._by_method.get(method)
        path = normalize_path(raw_uri)
        if not rules or path is None:
            return None
        for rule in rules:
            if rule.matches(path):
                return rule.scope
        return None


def normalize_path(raw_uri: str) -> str | None:
    """The path a backend would serve for ``raw_uri``, or None for one too ambiguous to judge.

    Drops the query, percent-decodes once and collapses empty segments. Refuses a raw
    ``#`` (no request carries a fragment; nginx passes ``/a#/../b`` on as it came, for a
    backend to read either way), ``.`` and ``..`` segments and ``;`` (backends resolve
    them in different ways, so the check cannot know which resource they reach; real
    clients never send them), raw whitespace, encoded slashes, backslashes and NUL,
    anything still percent-encoded after one decoding (a backend that decodes twice would
    read it differently), and control characters.
    """
    path = _ABSOLUTE_FORM.sub("", raw_uri, count=1).partition("?")[0]
    if not path.startswith("/") or "#" in raw_uri or _REFUSED_RAW.search(path):
        return None
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if _REFUSED_DECODED.search(path):
        return None
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        return None
    return "/" + "/".join(segments)


def parse(text: str, source: str) -> Policy:
    """The policy written in ``text``; ConfigError names ``source``, the line and the fault."""
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.partition("#")[0].split()
        if not fields:
            continue
        try:
            rules.append(_parse_rule(fields))
        except ValueError as error:
            raise ConfigError(f"{source}, line {number}: {error}") from None
    if not rules:
        raise ConfigError(f"{source}: the policy has no rules, so it would deny every request")
    return Policy(rules)


def load(path: str | Path) -> Policy:
    """The policy in the file at ``path``; ConfigError if it cannot be read or has a fault."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"Cannot read the policy file {path}: {error}") from None
    return parse(text, source=str(path))


def _parse_rule(fields: list[str]) -> Rule:
    if len(fields) != 3:
        raise ValueError(f"expected 'METHODS PATTERN SCOPE', got {len(fields)} field(s)")
    methods, pattern, scope = fields
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; known scopes: {', '.join(SCOPES)}")
    return Rule(_parse_methods(methods), pattern, scope)


def _parse_methods(field: str) -> frozenset[str]:
    if field == "*":
        return frozenset(METHODS)
    methods = field.upper().split(",")
    unknown = [method for method in methods if method not in METHODS]
    if unknown:
        raise ValueError(
            f"bad method {', '.join(map(repr, unknown))}; use * or some of {', '.join(METHODS)}"
        )
    return frozenset(methods)


def _compile(pattern: str) -> re.Pattern[str]:
    """A regex for a path pattern; ValueError says what is wrong with it."""
    if not pattern.startswith("/"):
        raise ValueError(f"bad pattern {pattern!r}: it must start with /")
    segments = pattern[1:].split("/") if pattern != "/" else []
    regex = ""
    for position, segment in enumerate(segments):
        if segment == "**" and position == len(segments) - 1:
            regex += "(?:/.*)?"
        elif segment == "*":
            regex += "/[^/]+"
        elif _SEGMENT.fullmatch(segment) and segment not in (".", ".."):
            regex += "/" + re.escape(segment)
        elif not segment:
            raise ValueError(f"bad pattern {pattern!r}: empty segment (a doubled or final /)")
        else:
            raise ValueError(
                f"bad pattern {pattern!r}: segment {segment!r} is not a plain name, * or a final **"
            )
    return re.compile(regex or "/")


DEFAULT = parse(DEFAULT_TEXT, source="the built-in policy")
