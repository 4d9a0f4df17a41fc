"""Issue 21 goal 5 (members side): the member page lists every message the outbox sent that holder and has
"Send pass link again" (email or SMS to the address on file), also as a bulk action; the holder's own "send my
pass" goes through the outbox too, so it reaches a phone where SMS is set up. Sent for real: the suite's SMTP
server and the local Twilio stand-in; the sending is the workers' code, run here in this process."""

from __future__ import annotations

import pytest
from django.urls import reverse

from delivery import sending
from delivery.models import EMAIL, SMS, Message
from members.services import pass_links

from .factories import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quick(settings):
    from django.core.cache import cache

    # The hourly limits per address live in the cache (Redis): a run within the hour of the last one must not
    # start with its counts.
    cache.clear()
    settings.PUBLIC_BASE_URL = "https://passar.example.is"
    settings.DEFAULT_FROM_EMAIL = "passar@issuer.example"
    settings.EMAIL_RATE = settings.SMS_RATE = 1000


def holder(club, *, distribution_url: str = "https://wallet.example/p/abc", **fields):
    values = {"email": "", "phone": ""}
    values.update(fields)
    upstream = {"distributionUrl": distribution_url} if distribution_url else {}
    return make_member(club, name="Anna Jónsdóttir", upstream=upstream, **values)


def test_send_pass_link_again_by_email_is_listed_on_the_member_page(client, manager, club, smtp_server):
    anna = holder(club, email="anna@example.is", phone="+3546901111")
    client.force_login(manager)
    page = client.get(reverse("members:member_detail", args=[anna.pk])).content.decode()
    assert "No message sent to this holder yet." in page and 'id="send-link"' in page
    response = client.post(
        reverse("members:member_send_link", args=[anna.pk]), {"channel": "email", "language": "en"}, follow=True
    )
    assert "Pass link queued for 1 member(s)" in response.content.decode()
    sending.send_queued(EMAIL)
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["anna@example.is"] and message["Subject"] == f"Your pass: {club.name}"
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert "https://wallet.example/p/abc" in body
    # Staff sent it: the holder is not told that someone asked for it on the sign-up page.
    assert f"The issuer of {club.name} sent you this link." in body and "Someone asked" not in body
    page = client.get(reverse("members:member_detail", args=[anna.pk])).content.decode()
    assert "anna@example.is" in page and "badge status-sent" in page
    client.post(reverse("members:member_send_link", args=[anna.pk]), {"channel": "email", "language": "is"})
    sending.send_queued(EMAIL)
    icelandic = smtp_server.messages[-1][1].get_body(preferencelist=("plain",)).get_content()
    assert f"Útgefandi {club.name} sendi þér þennan tengil." in icelandic


def test_the_member_page_lists_the_batch_message_that_sent_the_link_it_was_claimed_from(
    client, manager, club, smtp_server
):
    """Found by a walk through `make run`: the holder's campaign email was missing from their member page."""
    from delivery import services as delivery

    anna = holder(club, email="anna@example.is")
    anna.source_batch_id, anna.source_row = 7, 3
    anna.save(update_fields=["source_batch_id", "source_row"])
    link_email = delivery.MessageSpec(
        subject_key=pass_links.batch_row_subject_key(7, 3), channel=EMAIL, to="anna@example.is", text="https://x/s/1"
    )
    other_row = delivery.MessageSpec(
        subject_key=pass_links.batch_row_subject_key(7, 4), channel=EMAIL, to="bjork@example.is", text="https://x/s/2"
    )
    delivery.queue_messages([link_email, other_row])
    sending.send_queued(EMAIL)
    client.force_login(manager)
    page = client.get(reverse("members:member_detail", args=[anna.pk])).content.decode()
    assert "anna@example.is</code>" in page and "badge status-sent" in page
    assert "bjork@example.is" not in page and "No message sent to this holder yet." not in page


def test_send_again_by_sms_when_it_is_set_up_and_not_when_it_is_not(client, manager, club, twilio, settings):
    anna = holder(club, phone="+3546901111")
    client.force_login(manager)
    client.post(reverse("members:member_send_link", args=[anna.pk]), {"channel": "sms", "language": "is"})
    sending.send_queued(SMS)
    [sms] = twilio.messages
    assert sms["to"] == "+3546901111" and sms["body"] == f"Kortið þitt {club.name}: https://wallet.example/p/abc"
    settings.SMS_URL = ""
    response = client.post(reverse("members:member_send_link", args=[anna.pk]), {"channel": "sms"}, follow=True)
    assert "That channel is not set up; nothing was sent." in response.content.decode()
    assert Message.objects.count() == 1


def test_a_viewer_cannot_send(client, viewer, club):
    anna = holder(club, email="anna@example.is")
    client.force_login(viewer)
    assert client.post(reverse("members:member_send_link", args=[anna.pk]), {"channel": "email"}).status_code == 403
    assert 'id="send-link"' not in client.get(reverse("members:member_detail", args=[anna.pk])).content.decode()


def test_the_bulk_action_sends_each_ticked_member_by_the_first_channel_it_has(
    client, manager, club, smtp_server, twilio
):
    anna = holder(club, email="anna@example.is", phone="+3546901111")
    bjorn = holder(club, phone="+3546902222")
    nobody = holder(club)
    no_link = holder(club, email="x@example.is", distribution_url="")
    client.force_login(manager)
    response = client.post(
        reverse("members:member_bulk"),
        {"action": "send_link", "channel": "email,sms", "member": [anna.pk, bjorn.pk, nobody.pk, no_link.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Pass link queued for 2 member(s)" in page
    assert "Not sent: No address on file for email or sms." in page
    assert "Not sent: No pass link from SmartPages yet." in page
    sending.send_queued(EMAIL)
    sending.send_queued(SMS)
    assert [recipients for recipients, _ in smtp_server.messages] == [["anna@example.is"]]
    assert [sms["to"] for sms in twilio.messages] == ["+3546902222"]
    assert pass_links.member_subject_prefix(anna.pk) == f"member:{anna.pk}:"
    assert Message.objects.get(to="+3546902222").subject_key.startswith(f"member:{bjorn.pk}:")


def test_the_holders_send_my_pass_reaches_a_phone_through_the_outbox(club, twilio):
    anna = holder(club, phone="+3546901111")
    assert pass_links.pass_link_channels() == {EMAIL: True, SMS: True}
    masked = pass_links.pass_link_send(
        member=anna, channel=SMS, pass_url="https://passar.example.is/pass/k", language="is"
    )
    assert masked == "•••• 1111"
    [sms] = twilio.messages
    assert sms["body"] == f"Kortið þitt {club.name}: https://passar.example.is/pass/k"
    row = Message.objects.get()
    assert (row.status, row.subject_key.startswith(f"member:{anna.pk}:")) == (Message.SENT, True)


def test_a_send_my_pass_the_provider_refuses_says_failed(club, twilio):
    anna = holder(club, phone="+3546901111")
    twilio.fail_next(1, 400, code=21211)
    with pytest.raises(pass_links.PassLinkNotSent) as refused:
        pass_links.pass_link_send(member=anna, channel=SMS, pass_url="https://x.is/pass/k", language="en")
    assert refused.value.reason == "failed"
    assert Message.objects.get().status == Message.FAILED


def test_a_voided_pass_link_is_never_sent_again(client, manager, club, smtp_server):
    """Found by a walk through `make run`: "Send pass link again", ticked for a voided member among others (or on
    its own page), emailed the holder the wallet link of the cancelled pass."""
    anna = holder(club, email="anna@example.is")
    voided = holder(club, email="percy@example.com", status="voided", distribution_url="https://wallet.example/p/old")
    client.force_login(manager)
    page = client.get(reverse("members:member_detail", args=[voided.pk])).content.decode()
    assert 'id="send-link"' not in page and 'id="send-link-voided"' in page

    response = client.post(
        reverse("members:member_bulk"),
        {"action": "send_link", "channel": "email", "member": [anna.pk, voided.pk]},
        follow=True,
    )
    content = response.content.decode()
    assert "Pass link queued for 1 member(s)" in content
    assert "Not sent: The pass is voided: its link would open a cancelled pass." in content
    client.post(reverse("members:member_send_link", args=[voided.pk]), {"channel": "email"})
    sending.send_queued(EMAIL)
    assert [recipients for recipients, _ in smtp_server.messages] == [["anna@example.is"]]
    assert "https://wallet.example/p/old" not in str(smtp_server.messages[0][1])
