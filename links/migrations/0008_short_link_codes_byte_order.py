"""Short link codes in byte order, with one index, on PostgreSQL (see links.models.ShortLink.code).

A migration of its own: the LIKE index Django gives a text primary key is created at the end of the migration
that creates the table, after any operation in it could drop it.
"""

from django.db import migrations


def codes_in_byte_order(apps, schema_editor):
    # See ShortLink.code: PostgreSQL only (SQLite compares bytes already and has no "C" collation).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('ALTER TABLE links_shortlink ALTER COLUMN code TYPE varchar(16) COLLATE "C"')
        # Django gives a text primary key a second index for LIKE; codes are only ever looked up whole, and a
        # second index is a second insert per short link.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'links_shortlink' AND indexname LIKE '%%_like'"
            )
            for (name,) in cursor.fetchall():
                schema_editor.execute(f'DROP INDEX "{name}"')


class Migration(migrations.Migration):
    dependencies = [("links", "0007_short_links_opens_sending")]

    operations = [migrations.RunPython(codes_in_byte_order, migrations.RunPython.noop)]
