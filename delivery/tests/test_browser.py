"""The outbox's pages in Chromium at 1280 and 390 px: the DEBUG Outbox page after a send through the local
outbox, the suppression list with a removal, and a member page's messages with "Send pass link again".
Screenshots go to test-artifacts/delivery-shots/."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from conftest import ARTIFACTS, login
from delivery import sending, services
from delivery.models import EMAIL, SMS, Message, Suppression
from delivery.services import MessageSpec
from members.tests.factories import make_member, mirror_template

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_queue")]
SHOTS = ARTIFACTS / "delivery-shots"


@pytest.fixture
def outbox_mode(settings, tmp_path):
    """`make run`: DEBUG on, no EMAIL_URL or SMS_URL, both channels to the local outbox."""
    settings.DEBUG = True
    settings.OUTBOX_DIR = str(tmp_path)
    settings.EMAIL_BACKEND = "delivery.outbox.OutboxEmailBackend"
    settings.SMS_URL = ""
    settings.EMAIL_RATE = settings.SMS_RATE = 1000
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:8000"


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_outbox_suppressions_and_member_messages_in_the_browser(page, live_server, manager, sandbox, outbox_mode):
    club = mirror_template()
    anna = make_member(
        club,
        name="Anna Jónsdóttir",
        email="anna@example.is",
        phone="+3546901111",
        upstream={"distributionUrl": "https://wallet.example/p/anna"},
    )
    services.queue_messages(
        [
            MessageSpec(
                "batch:4:row:1",
                EMAIL,
                "bjorn@example.is",
                "Halló Björn, kortið þitt: http://127.0.0.1:8000/s/Ab3dE5gH9kLm",
                "Kortið þitt í Sundfélaginu",
                "<p>Halló Björn</p>",
            ),
            MessageSpec(
                "batch:4:row:2", SMS, "690 2222", "Halló Gunna, kortið þitt: http://127.0.0.1:8000/s/Zx8Wv7Ut6Sr"
            ),
            MessageSpec("batch:4:row:3", EMAIL, "ekki netfang", "x"),
        ]
    )
    sending.send_queued(EMAIL)
    sending.send_queued(SMS)
    services.suppression_add(channel=SMS, address="+3546903333", reason=Suppression.OPT_OUT, detail="Replied STOP")
    services.suppression_add(
        channel=EMAIL, address="gone@example.is", reason=Suppression.HARD_BOUNCE, detail="550 5.1.1"
    )

    login(page, live_server, manager.username)
    page.goto(live_server.url + reverse("delivery:outbox"))
    assert page.locator("#outbox tbody tr").count() == 2
    page.locator("#outbox summary").first.click()
    expect(page.get_by_text("Kortið þitt: http://127.0.0.1:8000/s/Zx8Wv7Ut6Sr").first).to_be_visible()
    shoot(page, "outbox")

    page.goto(live_server.url + reverse("delivery:suppression_list"))
    assert page.locator("#suppressions tbody tr").count() == 2
    shoot(page, "suppressions")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#suppressions tr", has_text="+3546903333").get_by_role("button", name="Remove").click()
    page.wait_for_selector("text=was taken off the suppression list")
    assert page.locator("#suppressions tbody tr").count() == 1

    page.goto(live_server.url + reverse("members:member_detail", args=[anna.pk]))
    assert page.get_by_text("No message sent to this holder yet.").is_visible()
    page.select_option("#send-channel", "sms")
    page.click("#send-link button[type=submit]")
    page.wait_for_selector("text=Pass link queued for 1 member(s)")
    sending.send_queued(SMS)
    page.select_option("#send-channel", "email")
    page.select_option("#send-language", "en")
    page.click("#send-link button[type=submit]")
    page.wait_for_selector("text=Pass link queued for 1 member(s)")
    sending.send_queued(EMAIL)
    page.reload()
    rows = page.locator("#member-messages tbody tr")
    assert rows.count() == 2 and rows.filter(has_text="Sent").count() == 2
    page.locator("#messages").scroll_into_view_if_needed()
    shoot(page, "member-messages")
    assert Message.objects.filter(subject_key__startswith=f"member:{anna.pk}:").count() == 2
