"""Queueing, skipping, cancelling and retrying messages, and sending them in this process to the suite's real
SMTP server (aiosmtpd in a process of its own)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from delivery import selectors, sending, services, sms
from delivery.models import EMAIL, SMS, Message, Suppression
from delivery.services import MessageSpec

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick(settings):
    settings.DEFAULT_FROM_EMAIL = "passar@issuer.example"
    settings.PUBLIC_BASE_URL = "https://passar.example.is"
    settings.DELIVERY_RETRY_SECONDS = 0.05  # backoff 0.05, 0.1, 0.2 … s
    settings.EMAIL_RATE = 1000


def spec(n: int, to: str | None = None, **fields) -> MessageSpec:
    values = {
        "subject_key": f"batch:1:row:{n}",
        "channel": EMAIL,
        "to": to or f"holder{n}@example.is",
        "subject": f"Passinn þinn {n}",
        "text": f"Halló {n}, hér er passinn: https://passar.example.is/p/{n}",
        "html": f"<p>Halló {n}</p>",
        "language": "is",
    }
    values.update(fields)
    return MessageSpec(**values)


def test_queueing_again_does_not_duplicate_and_bad_addresses_are_skipped_with_the_reason():
    first = services.queue_messages([spec(1), spec(2, to="not an address"), spec(3, channel=SMS, to="12")])
    assert first.queued == 1
    assert dict(first.skipped) == {
        "batch:1:row:2": "Not an email address.",
        "batch:1:row:3": "Not a mobile phone number.",
    }
    again = services.queue_messages([spec(1), spec(2, to="fixed@example.is")])
    assert again.queued == 1 and again.already == 1  # the skipped row is looked at afresh
    assert Message.objects.count() == 3
    assert selectors.status_counts("batch:1:") == {EMAIL: {"queued": 2}, SMS: {"skipped": 1}}


def test_a_suppressed_address_is_skipped_and_a_suppression_skips_queued_rows():
    services.suppression_add(channel=EMAIL, address="Gone@Example.is", reason=Suppression.HARD_BOUNCE)
    result = services.queue_messages([spec(1, to="gone@example.is"), spec(2)])
    assert result.skipped == [("batch:1:row:1", services.SUPPRESSED[Suppression.HARD_BOUNCE])]
    services.suppression_add(channel=EMAIL, address="holder2@example.is", reason=Suppression.COMPLAINT)
    assert Message.objects.get(subject_key="batch:1:row:2").status == Message.SKIPPED


def test_cancel_stops_queued_rows_and_retry_failed_takes_only_failed_ones():
    services.queue_messages([spec(n) for n in range(5)])
    Message.objects.filter(subject_key="batch:1:row:0").update(status=Message.SENT)
    Message.objects.filter(subject_key="batch:1:row:1").update(status=Message.FAILED, reason="refused")
    assert services.cancel("batch:1:") == 3
    assert services.retry_failed("batch:1:") == 1
    assert selectors.status_counts("batch:1:")[EMAIL] == {"sent": 1, "queued": 1, "skipped": 3}


def test_sending_in_process_reaches_the_smtp_server_once_each_multipart_with_list_unsubscribe(smtp_server):
    services.queue_messages([spec(n) for n in range(20)])
    assert sending.send_queued(EMAIL) == 20
    received = smtp_server.messages
    assert sorted(recipients[0] for recipients, _ in received) == sorted(f"holder{n}@example.is" for n in range(20))
    _recipients, message = received[0]
    assert message.get_content_type() == "multipart/alternative"
    assert str(message["List-Unsubscribe"]).strip().startswith("<https://passar.example.is/delivery/unsubscribe/")
    assert message["Content-Language"] == "is"
    assert "Halló" in message.get_body(preferencelist=("plain",)).get_content()
    rows = Message.objects.filter(status=Message.SENT)
    assert rows.count() == 20 and all(row.provider_id.startswith("<delivery.") for row in rows)
    assert sending.send_queued(EMAIL) == 0  # nothing is sent twice


def test_a_refused_address_fails_with_the_relays_words_and_a_deferral_is_tried_again(smtp_server):
    services.queue_messages([spec(1, to="refuse-1@example.is"), spec(2, to="deferonce-2@example.is")])
    sending.send_queued(EMAIL)
    refused = Message.objects.get(subject_key="batch:1:row:1")
    assert refused.status == Message.FAILED and "refused the address (550" in refused.reason
    deferred = Message.objects.get(subject_key="batch:1:row:2")
    assert deferred.status == Message.SENT and deferred.attempts == 2
    assert [recipients for recipients, _ in smtp_server.messages] == [["deferonce-2@example.is"]]


def test_a_dropped_connection_is_tried_again_on_a_fresh_one_and_a_hung_relay_times_out(smtp_server, settings):
    settings.EMAIL_TIMEOUT = 1
    services.queue_messages([spec(1, to="dropone-1@example.is"), spec(2), spec(3, to="slow-3@example.is")])
    Message.objects.filter(subject_key="batch:1:row:3").update(attempts=4)  # its last try: no minute of waiting
    sending.send_queued(EMAIL)
    rows = {row.subject_key: row for row in Message.objects.all()}
    assert rows["batch:1:row:1"].status == Message.SENT and rows["batch:1:row:1"].attempts == 2
    assert rows["batch:1:row:2"].status == Message.SENT
    assert rows["batch:1:row:3"].status == Message.FAILED and "did not answer in time" in rows["batch:1:row:3"].reason
    assert sorted(r[0] for r, _ in smtp_server.messages) == ["dropone-1@example.is", "holder2@example.is"]


def test_a_relay_that_is_down_leaves_the_rows_queued_for_later(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens on discard
    settings.DELIVERY_RETRY_SECONDS = 60
    services.queue_messages([spec(1)])
    sending.send_queued(EMAIL)
    row = Message.objects.get()
    assert row.status == Message.QUEUED and row.not_before > timezone.now()
    assert "could not be reached" in row.reason and "attempt 2 of 5" in row.reason


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "count"),
    [
        ("Hello, your pass: https://x.is/s/abc", "GSM-7", 36, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("€" * 80, "GSM-7", 160, 1),  # the extension table counts two septets
        ("Halló Jón, passinn þinn", "UCS-2", 23, 1),
        ("þ" * 70, "UCS-2", 70, 1),
        ("þ" * 71, "UCS-2", 71, 2),
        ("þ" * 135, "UCS-2", 135, 3),
        ("😀", "UCS-2", 2, 1),
        ("", "GSM-7", 0, 0),
    ],
)
def test_sms_segments(text, encoding, characters, count):
    assert sms.segments(text) == sms.SmsShape(encoding, characters, count)


def test_a_test_send_goes_out_now_recorded_nowhere(smtp_server):
    outcome = services.send_test(spec(1, to="maria@issuer.example", subject_key="test:maria"))
    assert outcome.sent and outcome.provider_id
    assert [recipients for recipients, _ in smtp_server.messages] == [["maria@issuer.example"]]
    assert not Message.objects.exists()
    assert services.send_test(spec(2, to="refuse-2@example.is")).reason.startswith("The mail relay refused the address")
    assert services.send_test(spec(3, to="nope")) == services.SendOutcome(sent=False, reason="Not an email address.")


def test_through_django_anymail_the_services_message_id_is_recorded(settings):
    """anymail's own test backend stands in for an email service's API here (no service is reachable from the
    suite); what is tested is that the outbox keeps the id the service gave, which its webhooks name."""
    from django.core import mail

    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    services.queue_messages([spec(1)])
    sending.send_queued(EMAIL)
    row = Message.objects.get()
    [sent] = mail.outbox
    assert row.status == Message.SENT and row.provider_id == str(sent.anymail_status.message_id)


def test_the_sweep_takes_back_a_dead_runs_message_and_nudges_for_due_retries(settings):
    from datetime import timedelta

    from background.recovery import MAX_ATTEMPTS
    from delivery.models import SendingRun

    services.queue_messages([spec(1), spec(2), spec(3)])
    long_ago = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS + 5)
    dead = SendingRun.objects.create(channel=EMAIL, heartbeat_at=long_ago)
    Message.objects.filter(subject_key="batch:1:row:1").update(status=Message.SENDING, run=dead, attempts=1)
    Message.objects.filter(subject_key="batch:1:row:2").update(status=Message.SENDING, run=dead, attempts=MAX_ATTEMPTS)
    Message.objects.filter(subject_key="batch:1:row:3").update(not_before=timezone.now() - timedelta(seconds=1))
    assert sending.delivery_sweep() == {"recovered": 1, "nudged": 1}
    rows = {row.subject_key: row for row in Message.objects.all()}
    assert (rows["batch:1:row:1"].status, rows["batch:1:row:1"].reason) == (Message.QUEUED, sending.WORKER_DIED)
    assert rows["batch:1:row:2"].status == Message.FAILED and "5 times" in rows["batch:1:row:2"].reason
    assert SendingRun.objects.get(pk=dead.pk).status == SendingRun.DIED
    # A live run of the channel sends what is due itself: no nudge then.
    SendingRun.objects.create(channel=EMAIL, heartbeat_at=timezone.now())
    assert sending.delivery_sweep()["nudged"] == 0
