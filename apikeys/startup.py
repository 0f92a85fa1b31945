"""Start-up's two halves: binding the models (every process) and preparing the database
(once per start, where the server starts and in the commands that need it).

``create_app`` only binds, which opens no connection, so a worker starts, and a command
that needs no database runs, whether the database is up or not. ``prepare`` migrates and
seeds the bootstrap key; ``serve.py`` runs it once before any worker starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peewee import DatabaseError, InterfaceError

from apikeys import audit, db, service

#: What an unreachable or broken database raises (peewee wraps the drivers' errors).
UNREACHABLE = (DatabaseError, InterfaceError)


def bind(config: Mapping[str, Any]) -> None:
    """Bind the models to ``DATABASE_URL``; no connection is opened until a query."""
    db.init(
        config["DATABASE_URL"],
        pool_size=config["DATABASE_POOL_SIZE"],
        pool_timeout=config["DATABASE_POOL_TIMEOUT"],
        timeout=config["DATABASE_TIMEOUT"],
    )


def prepare(config: Mapping[str, Any]) -> list[str]:
    """Apply pending migrations, seed ``APIKEYS_BOOTSTRAP_KEY`` and prune the audit log
    past ``AUDIT_RETENTION_DAYS``; the migrations applied.

    Raises one of ``UNREACHABLE`` when the database cannot be reached.
    """
    bind(config)
    try:
        applied = db.migrate()
        if config["APIKEYS_BOOTSTRAP_KEY"]:
            service.bootstrap(config["APIKEYS_BOOTSTRAP_KEY"], config["APIKEYS_BOOTSTRAP_ORG"])
        with db.database.connection_context():
            audit.prune_or_warn(config["AUDIT_RETENTION_DAYS"])
    finally:
        # Workers may fork after this: no connection opened here may outlive it.
        db.close_all()
    return applied


def describe(error: Exception) -> str:
    """One line for an operator: a driver's message may run over several."""
    first = str(error).strip().splitlines()
    return f"the database is unreachable: {first[0] if first else type(error).__name__}"
