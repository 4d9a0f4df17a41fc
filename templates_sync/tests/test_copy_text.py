"""The COPY text the first sync writes by hand (psycopg's own write_row took twice the Python time) reads back in
PostgreSQL as exactly the values it was made from, and as the same values as psycopg's own formatting of them."""

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from templates_sync.sync.writing import _copy_line

# Any text a template may carry once _mirror_row has removed NUL bytes (PostgreSQL stores none), surrogates
# excluded (orjson refuses them in what it reads).
TEXTS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
ROWS = st.lists(st.tuples(TEXTS, TEXTS, TEXTS), min_size=1, max_size=8)
pytestmark = pytest.mark.django_db


def _read_back(copy_text: bytes) -> list[tuple[str, ...]]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS copy_probe (n serial, a text, b text, c text)")
        cursor.execute("TRUNCATE copy_probe")
        with cursor.cursor.copy("COPY copy_probe (a, b, c) FROM STDIN") as copy:
            copy.write(copy_text)
        cursor.execute("SELECT a, b, c FROM copy_probe ORDER BY n")
        return [tuple(row) for row in cursor.fetchall()]


def _psycopg_text(rows) -> bytes:
    # psycopg's own text formatter: what cursor.copy's write_row sends.
    from psycopg._copy_base import TextFormatter
    from psycopg.adapt import Transformer

    formatter = TextFormatter(Transformer())
    return b"".join(bytes(formatter.write_row(row)) for row in rows) + bytes(formatter.end())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_copy_lines_read_back_as_the_values_they_were_made_from(rows):
    ours = b"".join((_copy_line(row, slice(0, 3)) + "\n").encode() for row in rows)
    assert _read_back(ours) == rows
    assert _read_back(_psycopg_text(rows)) == rows
