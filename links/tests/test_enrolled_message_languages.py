"""Issue 20, goal 8: the "already enrolled" message is kept in Icelandic and English; the holder sees their
page's language, falling back to the other."""

import json

import pytest
from django.core.management import call_command

from members.models import AutofillChange, AutofillSetting
from members.services import autofill
from sandbox import DEMO_TEMPLATE_ID

from .claim_factories import LAURA, link_path, mirror, open_and_claim

ICELANDIC = "Þú ert nú þegar skráð/ur — hér er kortið þitt."
ENGLISH = "You are already enrolled — here is your pass."

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


def second_claim_page(client, language: str) -> str:
    path = link_path(fields=LAURA)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = language
    open_and_claim(client, path)
    posted = open_and_claim(client, path)
    assert posted.status_code == 302 and "enrolled=1" in posted["Location"]
    return client.get(posted["Location"]).content.decode()


def test_the_command_sets_each_language_and_message_sets_both(sandbox, capsys):
    club = mirror()
    call_command(
        "external_id_autofill", "--template", DEMO_TEMPLATE_ID, "--source", "email",
        "--message-is", ICELANDIC, "--message-en", ENGLISH, "--json",
    )  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    assert (shown["already_enrolled_message_is"], shown["already_enrolled_message_en"]) == (ICELANDIC, ENGLISH)
    change = AutofillChange.objects.filter(template=club).first()
    assert (change.new_message_is, change.new_message) == (ICELANDIC, ENGLISH)

    call_command("external_id_autofill", "--template", DEMO_TEMPLATE_ID, "--message", "Velkomin aftur!")
    setting = AutofillSetting.objects.get(template=club)
    assert setting.source == "email"  # a message alone keeps the source
    assert (setting.already_enrolled_message_is, setting.already_enrolled_message) == ("Velkomin aftur!",) * 2

    call_command("external_id_autofill", "--template", DEMO_TEMPLATE_ID, "--message-en", "Welcome back!")
    setting.refresh_from_db()
    assert (setting.already_enrolled_message_is, setting.already_enrolled_message) == (
        "Velkomin aftur!",
        "Welcome back!",
    )


@pytest.mark.parametrize(("language", "expected", "other"), [("is", ICELANDIC, ENGLISH), ("en", ENGLISH, ICELANDIC)])
def test_the_holder_sees_the_message_in_their_pages_language(client, sandbox, language, expected, other):
    club = mirror()
    autofill.autofill_setting_change(
        template=club, source="email", already_enrolled_message=ENGLISH, already_enrolled_message_is=ICELANDIC
    )
    page = second_claim_page(client, language)
    assert expected in page and other not in page


@pytest.mark.parametrize(
    ("language", "english", "icelandic"), [("is", ENGLISH, ""), ("en", "", ICELANDIC)], ids=["is-falls-back", "en"]
)
def test_a_message_in_one_language_only_is_shown_on_the_other_languages_page(
    client, sandbox, language, english, icelandic
):
    club = mirror()
    autofill.autofill_setting_change(
        template=club, source="email", already_enrolled_message=english, already_enrolled_message_is=icelandic
    )
    page = second_claim_page(client, language)
    assert (english or icelandic) in page


def test_the_settings_page_saves_both_messages(client, sandbox, manager):
    club = mirror()
    client.force_login(manager)
    url = f"/members/autofill/{club.pk}/"
    form = {"source": "email", "field_identifier": "", "already_enrolled_message": ENGLISH}
    client.post(url, {**form, "already_enrolled_message_is": ICELANDIC})
    setting = AutofillSetting.objects.get(template=club)
    assert (setting.already_enrolled_message_is, setting.already_enrolled_message) == (ICELANDIC, ENGLISH)
    page = client.get(url).content.decode()
    assert f"Íslenska: {ICELANDIC}" in page and f"English: {ENGLISH}" in page
