"""Organizations and their API keys."""

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    # Frozen copies of the models as they were at this migration.
    class Organization(Model):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=128, unique=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "organization"

    class ApiKey(Model):
        id = CharField(primary_key=True, max_length=40)
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        name = CharField(max_length=128)
        key_hash = CharField(max_length=64, unique=True)
        key_hint = CharField(max_length=16)
        scopes = TextField()
        created_at = DateTimeField()
        expires_at = DateTimeField(null=True)
        last_used_at = DateTimeField(null=True)
        revoked_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_key"
            indexes = ((("organization", "created_at"), False),)

    # A name is unique among an organization's live keys; a revoked key frees its name.
    ApiKey.add_index(
        ApiKey.index(
            ApiKey.organization, ApiKey.name, unique=True, where=ApiKey.revoked_at.is_null()
        )
    )
    db.create_tables([Organization, ApiKey])
