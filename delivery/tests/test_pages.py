"""The outbox's staff pages: the suppression list (viewers read it, a manager removes an entry, audited), the
DEBUG-only Outbox page of `make run` with what the local outbox wrote, and the one-click unsubscribe link."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import StaffAction
from delivery import sending, services, unsubscribe
from delivery.models import EMAIL, SMS, Message, Suppression
from delivery.services import MessageSpec

pytestmark = pytest.mark.django_db


def test_viewers_read_the_suppression_list_and_a_manager_removes_an_entry_audited(client, viewer, manager):
    services.suppression_add(channel=SMS, address="+3546901111", reason=Suppression.OPT_OUT, detail="Replied STOP")
    services.suppression_add(channel=EMAIL, address="gone@example.is", reason=Suppression.HARD_BOUNCE)
    client.force_login(viewer)
    page = client.get(reverse("delivery:suppression_list")).content.decode()
    assert "+3546901111" in page and "Opted out (STOP)" in page and "Replied STOP" in page
    assert "gone@example.is" in page and "Hard bounce" in page and ">Remove<" not in page
    filtered = client.get(reverse("delivery:suppression_list"), {"channel": "email"}).content.decode()
    assert "gone@example.is" in filtered and "+3546901111" not in filtered
    entry = Suppression.objects.get(channel=SMS)
    assert client.post(reverse("delivery:suppression_remove", args=[entry.pk])).status_code == 403

    client.force_login(manager)
    response = client.post(reverse("delivery:suppression_remove", args=[entry.pk]), follow=True)
    assert "+3546901111 was taken off the suppression list" in response.content.decode()
    assert not Suppression.objects.filter(pk=entry.pk).exists()
    record = StaffAction.objects.get(action="delivery.suppression_remove")
    assert record.actor == manager and record.before == {
        "channel": "sms",
        "address": "+3546901111",
        "reason": "opt_out",
    }


def test_the_suppression_list_needs_a_login_and_says_when_it_is_empty(client, viewer):
    assert client.get(reverse("delivery:suppression_list")).status_code == 302
    client.force_login(viewer)
    assert "No address is suppressed" in client.get(reverse("delivery:suppression_list")).content.decode()


def test_the_outbox_page_lists_what_the_local_outbox_wrote_only_in_debug(client, manager, settings, tmp_path):
    settings.OUTBOX_DIR = str(tmp_path)
    settings.EMAIL_BACKEND = "delivery.outbox.OutboxEmailBackend"
    settings.SMS_URL = ""
    settings.DEBUG = True
    settings.EMAIL_RATE = settings.SMS_RATE = 1000
    services.queue_messages(
        [
            MessageSpec("batch:4:row:1", EMAIL, "anna@example.is", "Opnaðu kortið", "Kortið þitt", "<p>Opnaðu</p>"),
            MessageSpec("batch:4:row:2", SMS, "690 2222", "Kortið þitt: https://x.is/s/abc"),
        ]
    )
    sending.send_queued(EMAIL)
    sending.send_queued(SMS)
    assert set(Message.objects.values_list("status", flat=True)) == {Message.SENT}
    assert len(list(tmp_path.glob("email/*.eml"))) == 1 and len(list(tmp_path.glob("sms/*.json"))) == 1
    client.force_login(manager)
    page = client.get(reverse("delivery:outbox")).content.decode()
    assert "anna@example.is" in page and "Kortið þitt" in page and "text + HTML" in page
    assert "+3546902222" in page and "https://x.is/s/abc" in page
    settings.DEBUG = False
    assert client.get(reverse("delivery:outbox")).status_code == 404


def test_the_unsubscribe_link_suppresses_its_address_on_post_only(client, settings):
    settings.SMS_URL = ""
    token = unsubscribe.token_for(EMAIL, "Anna@Example.is")
    url = reverse("delivery:unsubscribe", args=[token])
    assert "Stop messages" in client.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert not Suppression.objects.exists()  # a link scanner's GET changes nothing
    assert "You are unsubscribed" in client.post(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert Suppression.objects.get().address == "anna@example.is"
    assert client.get(reverse("delivery:unsubscribe", args=[token[:-2] + "xx"])).status_code == 404


def test_admins_read_messages_and_suppressions_in_the_django_admin_and_change_nothing(client, admin_user):
    services.queue_messages([MessageSpec("member:1:a", EMAIL, "anna@example.is", "Kortið", "Efni")])
    services.suppression_add(channel=EMAIL, address="gone@example.is", reason=Suppression.HARD_BOUNCE)
    client.force_login(admin_user)
    messages = client.get(reverse("admin:delivery_message_changelist")).content.decode()
    assert "member:1:a" in messages and "anna@example.is" in messages
    assert "gone@example.is" in client.get(reverse("admin:delivery_suppression_changelist")).content.decode()
    assert client.get(reverse("admin:delivery_sendingrun_changelist")).status_code == 200
    detail = client.get(reverse("admin:delivery_message_change", args=[Message.objects.get().pk])).content.decode()
    assert 'name="_save"' not in detail
    assert client.get(reverse("admin:delivery_suppression_add")).status_code == 403
