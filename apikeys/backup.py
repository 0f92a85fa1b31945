"""A backup of the SQLite database taken while the service runs.

In WAL mode a commit is written to ``apikeys.db-wal`` and reaches ``apikeys.db`` only at
a later checkpoint, so a copy of the ``.db`` file alone misses recent writes, and copies
of the two files taken one after the other may not fit together. SQLite's online backup
copies the database as one read transaction sees it: every write committed before it
began, nothing half done; and in WAL mode a reader holds up no writer.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


class BackupError(Exception):
    """The backup could not be made; nothing was written at the target."""


def backup(source: Path, target: Path, timeout: float = 5) -> dict[str, Any]:
    """Copy the SQLite database ``source`` to ``target``, checked whole before it takes
    ``target``'s name (an earlier backup there stays until then); what was written."""
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    partial = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}")
    try:
        with (
            closing(sqlite3.connect(source, timeout=timeout)) as live,
            closing(sqlite3.connect(partial)) as copy,
        ):
            live.backup(copy)  # in one step: one read transaction, one consistent state
            (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupError(f"the copy failed its integrity check: {verdict}")
            migrations = [name for (name,) in copy.execute(_MIGRATIONS)]
        os.replace(partial, target)
    except sqlite3.Error as error:
        raise BackupError(f"{source}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return {"backup": str(target), "bytes": target.stat().st_size, "migrations": migrations}


#: The schema the backup has: restored, it is upgraded from there like any database.
_MIGRATIONS = "SELECT name FROM schema_migration ORDER BY name"
