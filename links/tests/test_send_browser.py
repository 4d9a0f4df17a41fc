"""The Send links page in Chromium: the preview of real rows, a placeholder refused, a test send to the
manager's own address (the suite's real SMTP server), then "Send to N holders" with its confirmation, and the
batch page's funnel and delivery table."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import ARTIFACTS, login
from delivery.models import Message
from links.models import LinkBatchSend
from links.services import sending

from .test_send_links import make_batch, template_with_fields

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_queue")]
SHOTS = ARTIFACTS / "send-shots"
# The funnel's steps that begin a line (below the step before them) yet show the arrow from that step.
ARROWS_STARTING_A_LINE = """() => [...document.querySelectorAll('.funnel')].flatMap(list => {
  const steps = [...list.children];
  return steps.filter((step, i) => i > 0 && step.offsetTop > steps[i - 1].offsetTop
      && getComputedStyle(step, '::before').display !== 'none').map(step => step.innerText.replace(/\\s+/g, ' '));
})"""


def shoot(page, name: str) -> None:
    """The whole page and its "Messages to holders" card, at 1280 and 390 px."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        page.locator("#delivery").screenshot(path=str(SHOTS / f"{name}-{width}-delivery.png"))
    page.set_viewport_size({"width": 1280, "height": 900})


def assert_no_arrow_starts_a_line(page) -> None:
    """From just above the width where the arrows are hidden (960 px) to a desktop's."""
    for width in (1280, 1000, 961):
        page.set_viewport_size({"width": width, "height": 900})
        assert page.evaluate(ARROWS_STARTING_A_LINE) == [], f"a funnel line starts with an arrow at {width} px"
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture
def card(media):
    return template_with_fields(
        [
            ("name", "Nafn", "TEXT", "ISSUER", True),
            ("email", "Netfang", "EMAIL", "ISSUER", False),
            ("phone", "Farsími", "PHONE_NUMBER", "ISSUER", False),
        ]
    )


def test_a_manager_previews_tests_and_sends_a_batchs_links(
    page, live_server, manager, card, tmp_path, smtp_server, settings
):
    settings.SMS_URL = "twilio+http://AC0123:secret@127.0.0.1:9?from=Passar"
    settings.DEFAULT_FROM_EMAIL = "passar@issuer.example"
    batch = make_batch(card, tmp_path)
    login(page, live_server, "maria")

    page.goto(f"{live_server.url}/links/{batch.pk}/")
    page.locator("#send-links").click()
    expect(page.locator(".preview-message")).to_have_count(3)
    expect(page.locator(".preview-subject").first).to_have_text("Kortið þitt er tilbúið")
    expect(page.locator(".preview-shape").first).to_contain_text("1 SMS part (with letters such as ð or þ")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"send-page-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.locator("#plan-count")).to_have_text("3")
    expect(page.locator("#not-sent")).to_contain_text("No address: the row has no email address or phone number.")

    page.get_by_label("SMS text (English)").fill("Hi {first_name}: {link}")
    page.locator("#preview-button").click()
    expect(page.locator("#send-errors")).to_contain_text("uses {first_name}, which is not a placeholder")
    page.get_by_label("SMS text (English)").fill("Hi {name}: {link}")
    page.locator("#preview-button").click()

    page.get_by_label("Your email address").fill("maria@issuer.example")
    page.locator("#test-button").click()
    expect(page.locator(".test-outcomes")).to_contain_text("EMAIL to maria@issuer.example: sent")
    assert [recipients for recipients, _ in smtp_server.messages] == [["maria@issuer.example"]]
    page.reload()  # the browser posts the form again: nothing is sent again
    expect(page.locator("#test-repeated")).to_contain_text("nothing was sent again")
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.locator("#test-send").screenshot(path=str(SHOTS / f"send-test-reloaded-{width}.png"))
    page.set_viewport_size({"width": 1280, "height": 900})
    assert [recipients for recipients, _ in smtp_server.messages] == [["maria@issuer.example"]]
    assert not Message.objects.exists()

    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.locator("#send-button").click()
    page.wait_for_url(re.compile(rf"/links/{batch.pk}/#delivery$"))
    assert questions and questions[0].startswith("Send 3 messages to holders now?")
    # The page answers at once: a worker queues the messages (this test's own queue has none: it runs the
    # worker's function itself once the page has been looked at).
    expect(page.locator(".messages")).to_contain_text("Sending to 3 holders")
    expect(page.locator("#send-history")).to_contain_text("queueing the messages")
    shoot(page, "batch-send-queueing")
    assert_no_arrow_starts_a_line(page)  # no message yet: seven steps on one line
    sending.batch_send_run(send_id=LinkBatchSend.objects.get().pk)
    # The page follows the send's status and reloads itself (at #delivery) once the messages are queued.
    expect(page.locator("#delivery-table tbody tr")).to_have_count(3)
    expect(page.locator("#send-history")).to_contain_text("3 messages put in the queue, 3 rows without a message")
    shoot(page, "batch-send-queued")
    expect(page.locator("#funnel-sent-email")).to_be_visible()
    expect(page.locator("#funnel-sent-sms")).to_be_visible()
    assert_no_arrow_starts_a_line(page)  # email and SMS: eleven steps from the rows to the passes
    assert Message.objects.filter(status=Message.QUEUED).count() == 3

    page.select_option("#delivery-status", "sent")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#delivery-table tbody")).to_contain_text("No messages with this status")

    # Back on the send page: every holder has the message, so nothing is offered to send again.
    page.goto(f"{live_server.url}/links/{batch.pk}/send/")
    expect(page.locator("#plan-count")).to_have_text("0")
    expect(page.locator("#plan-already")).to_have_text("3")
    expect(page.locator("#nothing-new")).to_be_visible()
    expect(page.locator("#send-button")).to_have_count(0)
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.locator("#send-now").screenshot(path=str(SHOTS / f"send-nothing-new-{width}.png"))

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/links/{batch.pk}/send/")
    expect(page.locator(".preview-message")).to_have_count(3)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the send page scrolls sideways on a phone ({width}px)"
