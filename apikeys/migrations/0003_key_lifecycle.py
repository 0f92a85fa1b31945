"""The key lifecycle: a previous secret kept through a roll's grace period, a rate limit of
each key's own, the hashes of secrets rolled away, and each organization's policy.

Every column added to ``api_key`` is nullable, so existing keys keep working unchanged
(no previous secret, the default limit); nothing rewrites the table.
"""

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
)


def up(migrator, db):
    # Frozen copies of the new tables as they are at this migration.
    class Organization(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "organization"

    class OrganizationPolicy(Model):
        organization = ForeignKeyField(Organization, primary_key=True, on_delete="CASCADE")
        max_expires_in_days = IntegerField(null=True)
        require_expiry = BooleanField(default=False)

        class Meta:
            database = db
            table_name = "organization_policy"

    class RetiredKeyHash(Model):
        key_hash = CharField(primary_key=True, max_length=64)
        api_key = CharField(max_length=40)
        retired_at = DateTimeField()

        class Meta:
            database = db
            table_name = "retired_key_hash"

    migrator.migrate(
        # Unique, and indexed: the check finds a key by either of its hashes in one query.
        migrator.add_column(
            "api_key", "previous_key_hash", CharField(max_length=64, null=True, unique=True)
        ),
        migrator.add_column("api_key", "previous_key_expires_at", DateTimeField(null=True)),
        migrator.add_column("api_key", "rate_limit", CharField(max_length=256, null=True)),
    )
    db.create_tables([OrganizationPolicy, RetiredKeyHash])
