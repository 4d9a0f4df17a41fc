"""Member search: the anchors of the folded search text (members.search_text.anchors) in a GIN index.

A query with a separator in it ("gudrun yr jonsdottir", "passkit.example") is looked up by its anchors there
instead of by every trigram of it (a rare full name or domain read the posting lists of every common trigram:
~40–120 ms at a million members). The function is the SQL twin of `members.search_text.anchors`; the tests
hold the two equal. PostgreSQL only: SQLite (the embedded mode) searches the text without an index.

Building the index reads every member once (about a minute per million on a small machine); CONCURRENTLY, so
claims and imports go on meanwhile (hence a migration outside a transaction). No column is added: the write
paths need no change.
"""

from django.db import migrations

# ASCII space and punctuation, as a regular-expression bracket ("\[", "\\", "\]" escaped; "-" last).
_SEPARATOR = r"""[ !"#$%&''()*+,./:;<=>?@\[\\\]^_`{|}~-]"""
_WORD = r"""[^ !"#$%&''()*+,./:;<=>?@\[\\\]^_`{|}~-]+"""

CREATE_FUNCTION = rf"""
CREATE OR REPLACE FUNCTION member_search_anchors(search_text text) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT coalesce(array_to_tsvector(array_agg(DISTINCT mark || left(found, 1 + letters))), ''::tsvector)
  FROM regexp_split_to_table(search_text, E'\n') AS part,
       LATERAL (
         SELECT '', matched[1] FROM regexp_matches(part, '{_SEPARATOR}{_WORD}', 'g') AS matched
         UNION ALL
         SELECT E'\n', reverse(matched[1]) FROM regexp_matches(part, '{_WORD}{_SEPARATOR}', 'g') AS matched
       ) AS anchors(mark, found),
       (VALUES (3), (5)) AS kept(letters)
$$
"""
CREATE_INDEX = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS member_search_anchors_idx ON members_member "
    "USING gin (member_search_anchors(search_text))"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTION, params=None)  # no placeholders: the "%" in it is a character
    schema_editor.execute(CREATE_INDEX)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX CONCURRENTLY IF EXISTS member_search_anchors_idx")
    schema_editor.execute("DROP FUNCTION IF EXISTS member_search_anchors(text)")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("members", "0006_bulk_action_heartbeat_refresh_chunks")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
