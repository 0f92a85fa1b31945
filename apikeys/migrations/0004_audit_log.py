"""The audit log: one row per change to a key, kept for AUDIT_RETENTION_DAYS; and the
index that serves a page of an organization's live keys in the listing's own order."""

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    # Frozen copies of the models as they were at this migration.
    class Organization(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "organization"

    class AuditEvent(Model):
        id = CharField(primary_key=True, max_length=40)
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        time = DateTimeField()
        action = CharField(max_length=32)
        actor_type = CharField(max_length=16)
        actor_key_id = CharField(max_length=40, null=True)
        target_key_id = CharField(max_length=40)
        changes = TextField(null=True)
        request_id = CharField(max_length=128, null=True)
        client_addr = CharField(max_length=256, null=True)
        user_agent = CharField(max_length=256, null=True)

        class Meta:
            database = db
            table_name = "audit_event"
            indexes = (
                # The listing: an organization's events, newest first (keyset pagination).
                (("organization", "time", "id"), False),
                # Pruning: every organization's events past retention.
                (("time",), False),
            )

    db.create_tables([AuditEvent])

    # Keyset pagination of the key list (apikeys/pagination.py): a page is a range of this
    # index, in order, with no sort; the list's total is counted on it alone.
    db.execute_sql(
        "CREATE INDEX api_key_live_order ON api_key (organization_id, created_at, id)"
        " WHERE revoked_at IS NULL"
    )
