"""A one-row table that /readyz rewrites: only a committed write tells a database that
takes writes from one that answers reads alone (a SQLite handle opened read-only, a
PostgreSQL standby)."""

from peewee import DateTimeField, IntegerField, Model


def up(migrator, db):
    class ReadinessProbe(Model):
        id = IntegerField(primary_key=True)
        checked_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "readiness_probe"

    db.create_tables([ReadinessProbe])
    ReadinessProbe.insert(id=1, checked_at=None).execute()
