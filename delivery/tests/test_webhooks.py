"""The providers' webhooks over real HTTP: Twilio's status callback and inbound STOP, each checked against
X-Twilio-Signature (good and bad), and django-anymail's tracking webhook (Postmark's shape) behind
ANYMAIL_WEBHOOK_SECRET."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest

from delivery import sending, services
from delivery.models import EMAIL, SMS, Message, Suppression
from delivery.services import MessageSpec

pytestmark = pytest.mark.usefixtures("own_queue")

STATUS_PATH = "/delivery/webhooks/twilio/status/"
INBOUND_PATH = "/delivery/webhooks/twilio/inbound/"


@pytest.fixture
def public(settings, live_server):
    """Twilio signs the public URL (PUBLIC_BASE_URL); here the live server is that address."""
    settings.PUBLIC_BASE_URL = live_server.url
    settings.SMS_RATE = settings.EMAIL_RATE = 1000
    return live_server.url


def sent_sms(twilio, n: int) -> Message:
    services.queue_messages([MessageSpec(f"member:{n}:1", SMS, f"+354690{n:04d}", f"Passinn {n}")])
    sending.send_queued(SMS)
    return Message.objects.get(subject_key=f"member:{n}:1")


@pytest.mark.django_db(transaction=True)
def test_a_signed_status_callback_records_delivered_and_failed(twilio, public):
    first, second = sent_sms(twilio, 1), sent_sms(twilio, 2)
    status, _ = twilio.post(public + STATUS_PATH, twilio.status_params(first.provider_id, "delivered"))
    assert status == 204
    status, _ = twilio.post(
        public + STATUS_PATH, twilio.status_params(second.provider_id, "undelivered", error_code="30005")
    )
    assert status == 204
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Message.DELIVERED
    assert second.status == Message.FAILED and "Twilio error 30005" in second.reason


@pytest.mark.django_db(transaction=True)
def test_a_callback_with_a_bad_signature_changes_nothing(twilio, public):
    message = sent_sms(twilio, 1)
    params = twilio.status_params(message.provider_id, "delivered")
    forged = twilio.post(public + STATUS_PATH, params, token="not-the-token")
    tampered_url = twilio.post(public + STATUS_PATH, params, signed_url=public + "/elsewhere/")
    request = urllib.request.Request(public + STATUS_PATH, data=b"MessageSid=x&MessageStatus=delivered", method="POST")
    try:
        unsigned = urllib.request.urlopen(request).status
    except urllib.error.HTTPError as error:
        unsigned = error.code
    assert [forged[0], tampered_url[0], unsigned] == [403, 403, 403]
    message.refresh_from_db()
    assert message.status == Message.SENT


@pytest.mark.django_db(transaction=True)
def test_stop_puts_the_number_on_the_list_and_start_takes_it_off(twilio, public):
    services.queue_messages(
        [MessageSpec("member:7:1", SMS, "+3546907777", "later"), MessageSpec("member:8:1", SMS, "+3546908888", "x")]
    )
    status, body = twilio.post(public + INBOUND_PATH, twilio.inbound_params("+3546907777", " stop "))
    assert status == 200 and b"<Response>" in body
    entry = Suppression.objects.get(channel=SMS)
    assert (entry.address, entry.reason) == ("+3546907777", Suppression.OPT_OUT)
    # the queued message to that number is not sent
    assert Message.objects.get(subject_key="member:7:1").status == Message.SKIPPED
    forged = twilio.post(public + INBOUND_PATH, twilio.inbound_params("+3546908888", "STOP"), token="guess")
    assert forged[0] == 403 and Suppression.objects.count() == 1
    twilio.post(public + INBOUND_PATH, twilio.inbound_params("+3546907777", "START"))
    assert not Suppression.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_anymail_tracking_webhook_needs_the_secret_and_records_bounces_and_complaints(
    public, settings, smtp_server
):
    settings.ANYMAIL = {"WEBHOOK_SECRET": "hook:s3cret-words"}
    services.queue_messages(
        [MessageSpec(f"member:{n}:1", EMAIL, f"holder{n}@example.is", "Passinn", "Subject") for n in (1, 2, 3)]
    )
    sending.send_queued(EMAIL)
    ids = dict(Message.objects.values_list("subject_key", "provider_id"))

    def post(payload: dict, secret: str = "hook:s3cret-words") -> int:
        request = urllib.request.Request(
            public + "/anymail/postmark/tracking/", data=json.dumps(payload).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
        try:
            return urllib.request.urlopen(request).status
        except urllib.error.HTTPError as error:
            return error.code

    delivered = {"RecordType": "Delivery", "MessageID": ids["member:1:1"], "Recipient": "holder1@example.is"}
    bounce = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "TypeCode": 1,
        "MessageID": ids["member:2:1"],
        "Email": "holder2@example.is",
        "Description": "The server was unable to deliver your message",
    }
    complaint = {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "MessageID": ids["member:3:1"],
        "Email": "holder3@example.is",
    }
    assert post(delivered, secret="hook:wrong") == 400 or post(delivered, secret="hook:wrong") in (400, 403)
    assert Message.objects.get(subject_key="member:1:1").status == Message.SENT
    assert [post(delivered), post(bounce), post(complaint)] == [200, 200, 200]
    statuses = dict(Message.objects.values_list("subject_key", "status"))
    assert statuses == {"member:1:1": "delivered", "member:2:1": "bounced", "member:3:1": "complained"}
    assert set(Suppression.objects.values_list("address", "reason")) == {
        ("holder2@example.is", Suppression.HARD_BOUNCE),
        ("holder3@example.is", Suppression.COMPLAINT),
    }
