"""The outbox on the embedded default (SQLite, as `make run` sends): a worker's take marks each message
`sending` in one statement, with RETURNING where SQLite has it (3.35+) and without it on the older SQLite
Django 5.2 still accepts; each message goes out once either way."""

from __future__ import annotations

import pytest

from conftest import run_on_sqlite

SQLITE_OUTBOX = """
from django.core.management import call_command
from django.db import connection

from delivery import sending, services
from delivery.models import EMAIL, Message

call_command("migrate", verbosity=0)

def queue(first, last):
    services.queue_messages(
        services.MessageSpec(subject_key=f"batch:1:row:{n}", channel=EMAIL, to=f"h{n}@example.is", text=f"link {n}")
        for n in range(first, last)
    )

queue(1, 4)
print("returning", connection.features.can_return_columns_from_insert, sending.send_queued(EMAIL))
connection.features.can_return_columns_from_insert = False  # as on SQLite before 3.35
queue(4, 7)
print("without", sending.send_queued(EMAIL))
print(sorted(set(Message.objects.values_list("status", "attempts"))), Message.objects.count())
"""


@pytest.mark.slow  # a process of its own, on a SQLite file
def test_each_message_is_taken_and_sent_once_on_sqlite_with_and_without_returning(tmp_path):
    printed = run_on_sqlite(SQLITE_OUTBOX, tmp_path, DEBUG="true", EMAIL_URL="", OUTBOX_DIR=str(tmp_path / "outbox"))
    assert printed == ["returning True 3", "without 3", "[('sent', 1)] 6"]
    assert len(list((tmp_path / "outbox" / "email").glob("*.eml"))) == 6
