"""SMS through a local server speaking Twilio's Messages API (sandbox/twilio.py) over real HTTP: sent once each,
429 with Retry-After and 5xx tried again, 400 and 401 failed with a clear reason, an opt-out suppressed."""

from __future__ import annotations

import time

import pytest

from delivery import sending, services
from delivery.models import SMS, Message, Suppression
from delivery.services import MessageSpec

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick(settings):
    settings.PUBLIC_BASE_URL = "https://passar.example.is"
    settings.DELIVERY_RETRY_SECONDS = 0.05  # backoff 0.05, 0.1, 0.2 … s
    settings.SMS_RATE = 1000


def text(n: int, to: str | None = None) -> MessageSpec:
    return MessageSpec(
        subject_key=f"batch:2:row:{n}",
        channel=SMS,
        to=to or f"+354690{n:04d}",
        text=f"Halló {n}, passinn þinn: https://passar.example.is/s/abc{n}",
        language="is",
    )


def test_every_text_reaches_the_provider_once_with_the_status_callback(twilio):
    result = services.queue_messages([text(n) for n in range(30)])
    assert result.queued == 30
    assert sending.send_queued(SMS) == 30
    assert sorted(m["to"] for m in twilio.messages) == sorted(f"+354690{n:04d}" for n in range(30))
    assert {m["from"] for m in twilio.messages} == {twilio.sender}
    assert {m["status_callback"] for m in twilio.messages} == {
        "https://passar.example.is/delivery/webhooks/twilio/status/"
    }
    sids = {m["sid"] for m in twilio.messages}
    assert set(Message.objects.values_list("provider_id", flat=True)) == sids
    assert sending.send_queued(SMS) == 0


def test_icelandic_numbers_without_country_code_and_non_mobiles(twilio):
    result = services.queue_messages([text(1, to="690 1234"), text(2, to="5551234"), text(3, to="+1 nonsense")])
    assert result.queued == 1
    assert sorted(reason for _key, reason in result.skipped) == ["Not a mobile phone number."] * 2
    sending.send_queued(SMS)
    assert [m["to"] for m in twilio.messages] == ["+3546901234"]


def test_429_waits_out_retry_after_then_sends(twilio):
    twilio.fail_next(1, 429, retry_after=1)
    services.queue_messages([text(1), text(2)])
    started = time.monotonic()
    sending.send_queued(SMS)
    assert time.monotonic() - started >= 1.0
    rows = list(Message.objects.order_by("pk"))
    assert [row.status for row in rows] == [Message.SENT, Message.SENT]
    assert rows[0].attempts == 2 and len(twilio.messages) == 2


def test_5xx_is_tried_again_with_backoff_until_it_gives_up(twilio):
    twilio.fail_next(2, 503)
    services.queue_messages([text(1)])
    sending.send_queued(SMS)
    row = Message.objects.get()
    assert row.status == Message.SENT and row.attempts == 3
    twilio.fail_next(5, 500)
    services.queue_messages([text(2)])
    sending.send_queued(SMS)
    row = Message.objects.get(subject_key="batch:2:row:2")
    assert row.status == Message.FAILED
    assert row.reason == "The SMS provider had an error (500). Gave up after 5 tries."


def test_a_refused_number_and_wrong_credentials_fail_with_a_clear_reason(twilio, settings):
    twilio.fail_next(1, 400, code=21211)
    services.queue_messages([text(1)])
    sending.send_queued(SMS)
    row = Message.objects.get()
    assert row.status == Message.FAILED and row.attempts == 1
    assert row.reason.startswith("The SMS provider refused the number")
    settings.SMS_URL = twilio.sms_url(token="wrong")
    services.queue_messages([text(2)])
    sending.send_queued(SMS)
    row = Message.objects.get(subject_key="batch:2:row:2")
    assert row.status == Message.FAILED
    assert row.reason == "The SMS provider refused the account SID or auth token in SMS_URL (401)."
    assert len(twilio.messages) == 0


def test_a_number_that_opted_out_at_the_provider_goes_on_the_suppression_list(twilio):
    twilio.opt_out("+3546900001")
    services.queue_messages([text(1), text(2)])
    sending.send_queued(SMS)
    row = Message.objects.get(subject_key="batch:2:row:1")
    assert row.status == Message.FAILED and row.reason == "The holder opted out of SMS (STOP)."
    assert Suppression.objects.filter(channel=SMS, address="+3546900001", reason=Suppression.OPT_OUT).exists()
    again = services.queue_messages([MessageSpec("member:5:1", SMS, "+3546900001", "x")])
    assert again.skipped == [("member:5:1", services.SUPPRESSED[Suppression.OPT_OUT])]


def test_sms_is_off_without_sms_url_outside_debug(settings, twilio):
    services.queue_messages([text(2)])  # queued while SMS was set up
    settings.SMS_URL, settings.DEBUG = "", False
    assert not services.channel_available(SMS)
    result = services.queue_messages([text(1)])
    assert result.skipped == [("batch:2:row:1", "SMS is not set up (SMS_URL).")]
    sending.send_queued(SMS)
    row = Message.objects.get(subject_key="batch:2:row:2")
    assert (row.status, row.reason) == (Message.FAILED, "SMS is not set up (SMS_URL).")
    assert twilio.messages == []
