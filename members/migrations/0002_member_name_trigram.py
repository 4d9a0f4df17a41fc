"""A trigram index for the member list's name substring search, on PostgreSQL only.

Django's `icontains` on PostgreSQL compiles to `UPPER(display_name::text) LIKE UPPER('%…%')`, so the GIN
index is on that expression. SQLite (the embedded mode) has no pg_trgm: both steps are no-ops there, and the
search still works, only without the index.
"""
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

INDEX_NAME = "member_name_trgm_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        f"CREATE INDEX IF NOT EXISTS {INDEX_NAME} ON members_member USING gin (UPPER(display_name) gin_trgm_ops)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")


class Migration(migrations.Migration):
    dependencies = [("members", "0001_initial")]

    operations = [
        TrigramExtension(),
        migrations.RunPython(create_index, drop_index, elidable=False),
    ]
