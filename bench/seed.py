"""Seed a benchmark database fast: bulk inserts in batches, hashes computed up front.

Keys go straight into the store, never through the API: issuing a million keys one
request at a time would take longer than the benchmark. Rows are written on peewee's
connection in transactions of ``BATCH`` rows, by the driver's ``executemany`` on SQLite
(about three times as fast as peewee's ``insert_many``, which converts every value
through its field and renders one long statement per batch) and by ``COPY`` on
PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from peewee import PostgresqlDatabase

from apikeys import crypto, scopes
from apikeys.db import database
from apikeys.models import ApiKey, Organization, utcnow

BATCH = 20_000
_COLUMNS = (
    ApiKey.id,
    ApiKey.organization,
    ApiKey.name,
    ApiKey.key_hash,
    ApiKey.key_hint,
    ApiKey.scopes,
    ApiKey.created_at,
)

#: One key's values, in ``_COLUMNS`` order.
Row = tuple[str, str, str, str, str, str, datetime]


def organization(name: str) -> str:
    """The id of the organization called ``name``, created if missing."""
    return Organization.ensure(name).id


def insert(rows: Iterable[Row]) -> None:
    """Insert ``rows``, ``BATCH`` rows per transaction."""
    columns = ", ".join(f'"{field.column_name}"' for field in _COLUMNS)
    table = f'"{ApiKey._meta.table_name}" ({columns})'
    if isinstance(database.obj, PostgresqlDatabase):
        sql = f"COPY {table} FROM STDIN"
    else:
        placeholders = ", ".join([database.param] * len(_COLUMNS))
        sql = f"INSERT INTO {table} VALUES ({placeholders})"
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            _write(sql, batch)
            batch = []
    if batch:
        _write(sql, batch)


def _write(sql: str, batch: list[Row]) -> None:
    with database.atomic():
        cursor = database.cursor()
        if sql.startswith("COPY"):
            with cursor.copy(sql) as copy:
                for row in batch:
                    copy.write_row(row)
        else:
            cursor.executemany(sql, batch)


def key_rows(org_id: str, secrets: Sequence[str], name: str = "bench") -> list[Row]:
    """Rows for keys of the organization that hold ``secrets``, with every scope."""
    created = utcnow() - timedelta(days=1)
    granted = scopes.serialize(scopes.SCOPES)
    return [
        (
            crypto.new_id("key"),
            org_id,
            f"{name}-{number}",
            crypto.hash_secret(secret),
            crypto.hint(secret),
            granted,
            created + timedelta(microseconds=number),
        )
        for number, secret in enumerate(secrets)
    ]


def keys(org_id: str, count: int) -> list[str]:
    """Issue ``count`` new keys to the organization, with every scope; returns their secrets."""
    secrets = [crypto.generate_secret() for _ in range(count)]
    insert(key_rows(org_id, secrets))
    return secrets


def filler(org_ids: Sequence[str], count: int, start: int = 0) -> Iterator[Row]:
    """``count`` rows of keys nobody holds (random hashes), dealt over ``org_ids``.

    Hashes come in ascending order, so the unique index on them grows at its end: a
    million rows seed several times faster, and the index they leave is the same kind
    of B-tree that a lookup walks.
    """
    entropy = os.urandom(32 * count).hex()
    hashes = sorted(entropy[64 * i : 64 * (i + 1)] for i in range(count))
    created = utcnow() - timedelta(days=2)
    granted = scopes.serialize(("read:charge_points",))
    for offset, key_hash in enumerate(hashes):
        number = start + offset
        yield (
            f"key_{number:020d}",
            org_ids[number % len(org_ids)],
            f"filler-{number:09d}",
            key_hash,
            "evk_...fill",
            granted,
            created + timedelta(microseconds=number),
        )


def interleave(many: Iterable[Row], count: int, few: Sequence[Row]) -> Iterator[Row]:
    """The ``count`` rows of ``many`` with ``few`` spread evenly among them."""
    every = max(1, count // (len(few) + 1))
    remaining = iter(few)
    for number, row in enumerate(many, start=1):
        yield row
        if number % every == 0:
            yield from _take(remaining)
    yield from remaining


def _take(rows: Iterator[Row]) -> Iterator[Row]:
    row = next(rows, None)
    if row is not None:
        yield row
