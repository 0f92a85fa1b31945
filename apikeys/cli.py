"""The operator's commands (``flask --app app ...``): JSON on stdout, errors on stderr."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from click.core import ParameterSource
from flask import current_app
from flask.cli import AppGroup
from marshmallow import ValidationError
from peewee import IntegrityError, PeeweeException, SqliteDatabase

from apikeys import audit, backup, crypto, db, pagination, scopes, service, startup
from apikeys.config import ConfigError
from apikeys.errors import ServiceError
from schemas.api_keys import ApiKeyCreatedSchema, ApiKeyListSchema
from schemas.audit import AuditEventListSchema
from schemas.fields import clean_name

orgs = AppGroup("orgs", help="Organizations.")
keys = AppGroup("keys", help="API keys.")
database = AppGroup("db", help="The database schema.")
audit_log = AppGroup("audit", help="The audit log of changes to keys.")


class _Text(click.ParamType):
    """A string a database can compare: the shell may hand over bytes that are not UTF-8
    (as lone surrogates), which SQLite and PostgreSQL refuse with a traceback."""

    name = "text"

    def convert(self, value, param, ctx):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("not valid UTF-8", param, ctx)
        if "\x00" in value:
            self.fail("contains a NUL character", param, ctx)
        return value


TEXT = _Text()


def _emit(payload: object) -> None:
    click.echo(json.dumps(payload))


def _label(value: str, option: str) -> str:
    """A name by the API's rules (``clean_name``), or a usage error naming the option."""
    try:
        return clean_name(value)
    except ValidationError as error:
        raise click.UsageError(f"{option}: {' '.join(error.messages)}") from None


@contextmanager
def settings_checked() -> Iterator[None]:
    """Under a ``flask`` command, a ConfigError is one line on stderr and exit status 1,
    as click reports its own errors; anywhere else it goes on unchanged. For the app's
    factory, which the command line calls before any command runs."""
    try:
        yield
    except ConfigError as error:
        if click.get_current_context(silent=True) is None:
            raise
        raise click.ClickException(str(error)) from None


def _prepare() -> list[str]:
    """Migrate and seed the bootstrap key (the app never does at start); an unreachable
    database or a bad bootstrap setting is one line on stderr and exit status 1."""
    try:
        return startup.prepare(current_app.config)
    except startup.UNREACHABLE as error:
        raise click.ClickException(startup.describe(error)) from None
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _prepared(command: Callable) -> Callable:
    """The command runs on a prepared database (``_prepare``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _prepare()
        return command(*args, **kwargs)

    return wrapper


def _user_errors(command: Callable) -> Callable:
    """A user's mistake becomes one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ServiceError as error:
            raise click.ClickException(error.message) from None
        except PeeweeException as error:
            # A change and its audit event commit together or not at all.
            reason = str(error).strip().partition("\n")[0]
            raise click.ClickException(f"the database failed; nothing changed: {reason}") from None

    return wrapper


@orgs.command("create")
@click.argument("name", type=TEXT)
@_user_errors
@_prepared
def create_org(name: str) -> None:
    """Create an organization."""
    name = _label(name, "NAME")
    try:
        organization = service.create_organization(name)
    except IntegrityError:
        raise click.ClickException(f"An organization named {name!r} already exists") from None
    _emit({"id": organization.id, "name": organization.name})


class _Days(click.ParamType):
    """A number of days, 1 to 3650, or ``none`` for no maximum."""

    name = "days|none"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        return click.IntRange(1, 3650).convert(value, param, ctx)


@orgs.command("policy")
@click.argument("org", type=TEXT)
@click.option(
    "--max-expires-in-days",
    type=_Days(),
    help="The longest a key may be valid from its creation, update or roll; 'none' for no "
    "maximum. A maximum implies an expiry.",
)
@click.option(
    "--require-expiry/--no-require-expiry",
    default=None,
    help="Whether every key must have an expiry.",
)
@_user_errors
@_prepared
def org_policy(org: str, max_expires_in_days, require_expiry) -> None:
    """Show an organization's key policy, or change it (existing keys are left as they are)."""
    rules = {}
    given = click.get_current_context().get_parameter_source("max_expires_in_days")
    if given is ParameterSource.COMMANDLINE:
        rules["max_expires_in_days"] = max_expires_in_days
    if require_expiry is not None:
        rules["require_expiry"] = require_expiry
    organization = service.find_organization(org)
    if rules:
        _emit(service.set_policy(organization.id, **rules).as_dict())
    else:
        _emit(service.get_policy(organization.id).as_dict())


@keys.command("create")
@click.option("--org", "org", type=TEXT, required=True, help="The organization's id or name.")
@click.option("--name", type=TEXT, required=True)
@click.option("--scope", "scope_list", type=TEXT, multiple=True, help="Repeat for each scope.")
@click.option("--all-scopes", is_flag=True, help="Grant every scope.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@_user_errors
@_prepared
def create_key(org, name, scope_list, all_scopes, expires_in_days) -> None:
    """Create a key and print it, secret included (shown only this once)."""
    if all_scopes == bool(scope_list):
        raise click.UsageError("Give either --scope (one or more) or --all-scopes")
    requested = scopes.SCOPES if all_scopes else scope_list
    name = _label(name, "--name")
    organization = service.find_organization(org)
    issued = service.create_key(organization.id, name, requested, expires_in_days)
    _emit(ApiKeyCreatedSchema().dump(issued))


@keys.command("list")
@click.option("--org", "org", type=TEXT, required=True, help="The organization's id or name.")
@_user_errors
@_prepared
def list_keys(org: str) -> None:
    """List an organization's live keys, newest first."""
    page, total = service.page_of_keys(service.find_organization(org).id)
    _emit(ApiKeyListSchema().dump(page.listing(total)))


@keys.command("revoke")
@click.argument("key_id", type=TEXT)
@_user_errors
@_prepared
def revoke_key(key_id: str) -> None:
    """Revoke a key for good."""
    service.revoke_any(key_id)
    _emit({"id": key_id, "revoked": True})


@audit_log.command("list")
@click.option("--org", "org", type=TEXT, required=True, help="The organization's id or name.")
@click.option("--limit", type=click.IntRange(1, pagination.MAX_LIMIT), default=None)
@click.option("--after", type=TEXT, default=None, help="The next_cursor of the page before.")
@_user_errors
@_prepared
def list_events(org: str, limit: int | None, after: str | None) -> None:
    """List an organization's audit events, newest first."""
    organization = service.find_organization(org)
    retention = current_app.config["AUDIT_RETENTION_DAYS"]
    page, total = audit.events(organization.id, retention, limit, after)
    _emit(AuditEventListSchema().dump(page.listing(total)))


@keys.command("generate")
def generate_key() -> None:
    """Print a fresh, valid secret that is not stored (for APIKEYS_BOOTSTRAP_KEY)."""
    click.echo(crypto.generate_secret())


@database.command("upgrade")
def upgrade() -> None:
    """Apply pending migrations and seed APIKEYS_BOOTSTRAP_KEY when it is set; print what
    it applied and what the schema now has."""
    _emit({"applied": _prepare(), "current": db.applied_migrations()})


@database.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def backup_database(path: Path) -> None:
    """Copy the SQLite database to PATH, safely while the service runs (SQLite's online
    backup: a copy of the .db file alone misses writes still in its WAL); print what was
    written. Migrates nothing: a backup before an upgrade has the schema it had."""
    live = db.database.obj
    if not isinstance(live, SqliteDatabase) or live.database == ":memory:":
        raise click.ClickException("db backup copies a SQLite database; for PostgreSQL use pg_dump")
    try:
        written = backup.backup(
            Path(live.database), path, timeout=current_app.config["DATABASE_TIMEOUT"]
        )
    except backup.BackupError as error:
        raise click.ClickException(str(error)) from None
    _emit(written)


COMMANDS = (orgs, keys, database, audit_log)
