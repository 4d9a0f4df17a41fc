"""Claims on the embedded default (SQLite, as `make run` serves them): a template with a unique field keeps
taking claims after its first member. Found by a walk through `make run`: the unique-value check's query raised
"malformed JSON" on SQLite, so every claim after the first was a 500 page."""

from __future__ import annotations

import pytest

from conftest import run_on_sqlite

SQLITE_CLAIMS = """
from django.conf import settings
from django.core.management import call_command
from django.test import Client

from links.tests.claim_factories import link_path, open_and_claim
from members.models import Member
from sandbox import DEMO_TEMPLATE_ID, SmartPagesSandbox
from templates_sync import sync

call_command("migrate", verbosity=0)
upstream = SmartPagesSandbox(templates=3, key_id="sandbox", key_token="sandbox-secret").start()
settings.SMARTPAGES_API_URL, settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = upstream.url, "sandbox", "sandbox-secret"
settings.CLAIM_RATE = "1000/m"
card = upstream.get_template(DEMO_TEMPLATE_ID)
for field in card["inputFields"]:
    field["isUnique"] = field["identifier"] == "phone"
template_id = upstream.add_template(card, id="7d3c9a52-58a4-4f0e-9d7e-1f2a3b4c5d6e", name="Klippikort")["id"]
assert sync.templates_sync_all().status == "succeeded"

def claim(name, phone):
    path = link_path(template_id, {"name": name, "email": f"{name.lower()}@example.is", "phone": phone})
    answer = open_and_claim(Client(), path)
    return answer.status_code, "Another pass of this card already has the" in answer.content.decode()

print("gudrun", *claim("Gudrun", "+354 699 1234"))
print("jon", *claim("Jon", "+354 699 5678"))
print("same phone", *claim("Bjork", "+354 699 1234"))
print("gudrun again", *claim("Gudrun", "+354 699 1234"))
print("members", sorted(Member.objects.values_list("display_name", "status")))
upstream.stop()
"""


@pytest.mark.slow  # a process of its own, on a SQLite file
def test_a_template_with_a_unique_field_keeps_taking_claims_on_sqlite(tmp_path):
    printed = run_on_sqlite(SQLITE_CLAIMS, tmp_path, MEDIA_ROOT=str(tmp_path))
    assert printed == [
        "gudrun 302 False",
        "jon 302 False",
        # The phone is Guðrún's: the link's own values are refused (the issuer must fix them), no pass made.
        "same phone 400 True",
        # Her own link again: the member holding every value of it is hers, and its pass is shown.
        "gudrun again 302 False",
        "members [('Gudrun', 'issued'), ('Jon', 'issued')]",
    ]
