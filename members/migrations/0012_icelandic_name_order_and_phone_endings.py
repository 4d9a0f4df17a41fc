"""Icelandic name order and phone-ending search on PostgreSQL (SQLite: members.collation registers the order
on each connection, and scans the few members the embedded mode holds).

- The ICU collation "is-x-icu" (members.collation.ICELANDIC_COLLATION): PostgreSQL built with ICU has it in
  pg_catalog; where it is missing (collations not imported) it is created from the ICU locale "is".
- An index on the name in that collation, with the id: the list sorted by name reads its first page from it
  (it replaces the plain name index, which only the old byte-order sort used).
- An index on the reversed phone number (text_pattern_ops): "ends with 581236" is "reversed starts with
  632185", a range scan of it instead of reading every member.
"""

from django.db import migrations

COLLATION = "is-x-icu"
INDEXES = {
    "member_name_is_idx": f'CREATE INDEX IF NOT EXISTS member_name_is_idx ON members_member ((display_name COLLATE "{COLLATION}"), id)',
    "member_phone_reversed_idx": "CREATE INDEX IF NOT EXISTS member_phone_reversed_idx ON members_member (reverse(phone) text_pattern_ops)",
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_collation WHERE collname = %s", [COLLATION])
        exists = cursor.fetchone() is not None
    if not exists:
        schema_editor.execute(f"CREATE COLLATION IF NOT EXISTS \"{COLLATION}\" (provider = icu, locale = 'is')")
    for statement in INDEXES.values():
        schema_editor.execute(statement)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    # The collation stays: it may be pg_catalog's own, and other objects may use it.


class Migration(migrations.Migration):
    dependencies = [("members", "0011_member_adoption_and_conflicts")]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
        # The plain (display_name, id) index served the old byte-order sort only; the list sorts in the
        # collation now, so it would cost every insert and serve nothing.
        migrations.RemoveIndex(model_name="member", name="member_name_idx"),
    ]
