"""The template sync into a SQLite mirror (the embedded default), in a process of its own on a SQLite file:
the writer of many rows a statement stores exactly what the ORM would (text that COPY would escape, prices, dates, raw),
and an unchanged re-sync writes nothing."""

import pytest

from conftest import run_on_sqlite

SQLITE_SYNC = """
import json
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from sandbox import SmartPagesSandbox
from templates_sync import sync
from templates_sync.models import PassTemplate
from templates_sync.sync import rows, writing
from django.conf import settings

call_command("migrate", verbosity=0)
server = SmartPagesSandbox(templates=40, key_id="k", key_token="t").start()
settings.SMARTPAGES_API_URL, settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = server.url, "k", "t"
settings.SMARTPAGES_PAGE_SIZE = 7
tricky = "tab\\there, line\\nbreak\\r\\nand a back\\\\slash \\\\N ' \\" ; -- þ"
ids = server.template_ids()
server.update_template(ids[3], name=tricky, description=tricky, passPrice=12.5, stamps=3)
items = [server.get_template(template_id) for template_id in ids]
templates = []
for item in items:
    digest, dumped = rows._fingerprint(item)
    templates.append(rows._mirror_row(item, template_id=rows._canonical_id(item), digest=digest, dumped=dumped))
now = timezone.now()
snapshot = lambda: list(PassTemplate.objects.order_by("id").values())
writing._write_with_orm(templates, now=now)
through_orm = snapshot()
PassTemplate.objects.all().delete()
writing.SQLITE_ROWS_PER_STATEMENT = 7  # 40 rows: five statements of 7 and one of 5
writing._write_with_sqlite(templates, now=now)
print("same as the ORM", snapshot() == through_orm, len(through_orm))
writing._write_with_sqlite(templates[:5], now=now)  # upserted again: first_seen_at kept
print("upsert keeps rows", snapshot() == through_orm)
PassTemplate.objects.all().delete()
first = sync.templates_sync_all()
print(first.status, first.created_count, first.pages)
mirrored = PassTemplate.objects.get(pk=ids[3])
print("tricky", mirrored.name == tricky and mirrored.raw == items[3], str(mirrored.pass_price), mirrored.stamps)
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE written (n INTEGER)")
    cursor.execute("INSERT INTO written VALUES (0)")
    cursor.execute("CREATE TRIGGER w AFTER UPDATE ON templates_sync_passtemplate BEGIN UPDATE written SET n = n + 1; END")
again = sync.templates_sync_all()
with connection.cursor() as cursor:
    cursor.execute("SELECT n FROM written")
    print(again.status, again.unchanged, "written", cursor.fetchone()[0])
server.stop()
"""


@pytest.mark.slow
def test_the_sqlite_writer_stores_what_the_orm_would_and_a_resync_writes_nothing(tmp_path):
    printed = run_on_sqlite(SQLITE_SYNC, tmp_path, timeout=180)
    assert printed == [
        "same as the ORM True 40",
        "upsert keeps rows True",
        "succeeded 40 6",
        "tricky True 12.50 3",
        "succeeded 40 written 0",
    ]
