"""Sending a batch's links: `manage.py send_links`, the Send links page (preview, test send, send), the funnel
and the delivery table — against the real outbox and, where messages go out, the suite's real SMTP server."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from conftest import free_port, wait_for
from delivery import sending as delivery_sending
from delivery.models import EMAIL, SMS, Message
from links import tokens
from links.keyring import link_keys
from links.messages import MessageError, check_message
from links.models import LinkBatch, LinkBatchSend, LinkClaim
from links.services import sending

from .factories import demo_template, template_with_fields

pytestmark = pytest.mark.django_db

HOLDERS = [
    # name, email, phone, language
    ("Anna Jónsdóttir", "anna@example.is", "", "is"),
    ("Ben Smith", "ben@example.com", "+354 825 0002", "en"),
    ("Guðrún Þórsdóttir", "", "825 0003", "íslenska"),
    ("Dagur", "", "", ""),  # no address at all
    ("Eva", "not-an-address", "", "en"),  # left out of the link with a warning; the outbox refuses the address
    ("", "frida@example.is", "", "is"),  # no name, which the template requires: an error row
]


@pytest.fixture
def demo(media):
    """A card whose email and phone are optional, so rows may have either, both or neither."""
    return template_with_fields(
        [
            ("name", "Nafn", "TEXT", "ISSUER", True),
            ("email", "Netfang", "EMAIL", "ISSUER", False),
            ("phone", "Farsími", "PHONE_NUMBER", "ISSUER", False),
        ]
    )


@pytest.fixture(autouse=True)
def outbox_settings(settings):
    settings.SMS_URL = "twilio+http://AC0123:secret@127.0.0.1:9?from=Passar"
    settings.DEFAULT_FROM_EMAIL = "passar@issuer.example"
    settings.EMAIL_RATE = 1000
    settings.CLAIM_RATE = "100000/m"


def make_batch(demo, tmp_path, holders=HOLDERS, *options: str) -> LinkBatch:
    """The holders' batch, with short links unless other options are given (a long link alone takes two
    segments of an Icelandic SMS)."""
    options = options or ("--short-links",)
    source, out = tmp_path / f"in-{uuid.uuid4().hex}.csv", tmp_path / f"out-{uuid.uuid4().hex}.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "phone", "language"])
        writer.writerows(holders)
    stdout = StringIO()
    call_command("generate_links", "--template", str(demo.pk), str(source), str(out), "--json", *options, stdout=stdout)
    return LinkBatch.objects.get(pk=json.loads(stdout.getvalue())["batch"])


def send_command(batch: LinkBatch, *args: str) -> dict:
    stdout = StringIO()
    call_command("send_links", str(batch.pk), *args, "--json", stdout=stdout)
    return json.loads(stdout.getvalue())


def links_of(batch: LinkBatch) -> dict[int, str]:
    rows = sending.batch_rows(batch=batch, options=sending.SendOptions())
    return {row.number: row.link for row in rows}


def test_send_links_sends_each_row_once_by_its_first_channel_in_its_language_and_again_only_new_rows(demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    assert batch.errors == 1 and batch.warnings == 1

    outcome = send_command(batch, "--channel", "email,sms", "--language", "en")

    assert outcome == {"queued": 3, "skipped": 3, "already": 0, "batch": batch.pk}
    messages = {m.subject_key: m for m in Message.objects.all()}
    assert sorted(messages) == [f"batch:{batch.pk}:row:{n}" for n in (1, 2, 3)]
    links = links_of(batch)
    anna, ben, gudrun = (messages[f"batch:{batch.pk}:row:{n}"] for n in (1, 2, 3))
    assert (anna.channel, anna.to, anna.language) == (EMAIL, "anna@example.is", "is")
    assert anna.subject == "Kortið þitt er tilbúið" and links[1] in anna.text and "Hæ Anna Jónsdóttir," in anna.text
    assert f'<a href="{links[1]}">' in anna.html
    assert (ben.channel, ben.language) == (
        EMAIL,
        "en",
    ) and "Hi Ben Smith," in ben.text  # email first, though he has a phone
    assert (gudrun.channel, gudrun.to, gudrun.language) == (SMS, "+3548250003", "is")
    assert gudrun.text == f"Kortið þitt í símann: {links[3]}"
    record = LinkBatchSend.objects.get()
    reasons = {entry["example"]: entry["rows"] for entry in record.skipped_summary}
    assert reasons == {
        "No address: the row has no email address or phone number.": [4],
        "Not an email address: not-an-address": [5],
        "The row has an error: Nafn is required.": [6],
    }

    again = send_command(batch, "--channel", "email,sms")
    assert again == {"queued": 0, "skipped": 3, "already": 3, "batch": batch.pk}
    assert Message.objects.count() == 3


def test_sms_only_sends_to_rows_with_a_phone_and_email_only_to_rows_with_an_email(demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    assert send_command(batch, "--channel", "sms")["queued"] == 2
    assert sorted(Message.objects.values_list("subject_key", "channel")) == [
        (f"batch:{batch.pk}:row:2", SMS),
        (f"batch:{batch.pk}:row:3", SMS),
    ]
    # Email afterwards: rows 1 and 2 by email (row 2 now has both: one message per channel and key).
    assert send_command(batch, "--channel", "email")["queued"] == 2


def test_the_command_refuses_an_unfinished_batch_and_an_unknown_one(demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    LinkBatch.objects.filter(pk=batch.pk).update(status=LinkBatch.Status.RUNNING)
    with pytest.raises(CommandError, match="once the batch has finished"):
        send_command(batch, "--channel", "email")
    with pytest.raises(CommandError, match="No link batch #999999"):
        call_command("send_links", "999999", "--channel", "email", stdout=StringIO())


def test_placeholders_that_do_not_exist_and_stray_braces_are_refused_with_a_clear_message():
    check_message("Hi {name}: {link}", what="The SMS text (English)")
    with pytest.raises(MessageError, match=r"uses \{nafn\}, which is not a placeholder: use \{name\} and \{link\}"):
        check_message("Hæ {nafn}: {link}", what="The SMS text (Icelandic)")
    with pytest.raises(MessageError, match="without its pair"):
        check_message("Hi {name: {link}", what="The email text (English)")
    with pytest.raises(MessageError, match=r"has no \{link\}"):
        check_message("Hi {name}", what="The email text (English)")
    with pytest.raises(MessageError, match=r"uses \{link!r\}"):
        check_message("{link!r}", what="The SMS text (English)")


def test_an_sms_over_the_allowed_segments_is_refused_and_listed(demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    long_sms = "Hæ {name}, " + "þetta er löng kveðja frá félaginu. " * 3 + "{link}"
    options = sending.SendOptions(
        channels=(SMS,),
        columns=sending.send_columns_guess(batch=batch),
        messages={**sending.DEFAULT_MESSAGES, "is": sending.LanguageMessage("S", "{link}", long_sms)},
        max_segments=2,
    )
    preview = sending.batch_send_preview(batch=batch, options=options)
    gudrun = next(item for item in preview if item.row.number == 3)
    assert (gudrun.shape.encoding, gudrun.shape.characters, gudrun.shape.segments) == ("UCS-2", 163, 3)
    assert gudrun.reason == (
        "Too long for an SMS: it would be sent in 3 parts (163 characters; each part holds 67 characters, as it "
        "has letters such as ð, þ or á), and at most 2 are allowed. To send it, shorten the text or allow longer SMS."
    )
    # Long links (…/p/token) take most of a message: staff are told of the short ones.
    assert sending._too_long_sms(gudrun.shape, max_segments=2, short_links=False).endswith(
        "To send it, shorten the text, allow longer SMS, or upload the file again with short links."
    )
    result = sending.batch_send(batch=batch, options=options)
    assert result.queued == 1  # Ben's English SMS fits
    assert not Message.objects.filter(subject_key=f"batch:{batch.pk}:row:3").exists()


def test_short_links_fit_an_icelandic_sms_in_one_segment(demo, tmp_path, settings):
    settings.PUBLIC_BASE_URL = "https://passi.felagid.is"  # 24 characters
    batch = make_batch(demo, tmp_path, HOLDERS, "--short-links")
    options = sending.SendOptions(channels=(SMS,), columns=sending.send_columns_guess(batch=batch))
    gudrun = next(item for item in sending.batch_send_preview(batch=batch, options=options) if item.row.number == 3)
    assert len(gudrun.row.link) == 39 and gudrun.shape.encoding == "UCS-2" and gudrun.shape.segments == 1
    # With the holder's name in front too, as a manager may write it:
    named = sending.SendOptions(
        channels=(SMS,),
        columns=options.columns,
        messages={**sending.DEFAULT_MESSAGES, "is": sending.LanguageMessage("S", "{link}", "Hæ {name}! {link}")},
    )
    gudrun = next(item for item in sending.batch_send_preview(batch=batch, options=named) if item.row.number == 3)
    assert gudrun.shape.segments == 1, gudrun.shape


# --- the page -------------------------------------------------------------------------------------------------
def options_of(batch: LinkBatch) -> sending.SendOptions:
    return sending.SendOptions(channels=(EMAIL, SMS), columns=sending.send_columns_guess(batch=batch))


def page_data(batch: LinkBatch, **changes) -> dict:
    data = {
        "channels": "email,sms",
        "email_column": "email",
        "phone_column": "phone",
        "name_column": "name",
        "language_column": "language",
        "default_language": "is",
        "max_segments": "2",
        "test_email": "",
        "test_phone": "",
    }
    for code, message in sending.DEFAULT_MESSAGES.items():
        data.update({f"subject_{code}": message.subject, f"body_{code}": message.body, f"sms_{code}": message.sms})
    data.update(changes)
    return data


def test_the_send_page_previews_three_real_rows_exactly_as_sent_and_counts_who_gets_one(
    client, manager, demo, tmp_path
):
    batch = make_batch(demo, tmp_path)
    client.force_login(manager)

    page = client.get(f"/links/{batch.pk}/send/")

    html = page.content.decode()
    assert page.status_code == 200, re.findall(r'role="alert">([^<]*)<', html)
    assert html.count('class="preview-message"') == 3
    links = links_of(batch)
    assert "Kortið þitt er tilbúið" in html and links[1] in html and "Your pass is ready" in html
    assert "1 SMS part (with letters such as ð or þ" in html  # Guðrún's Icelandic SMS
    assert re.search(r'id="plan-count">3<', html) and re.search(r'id="plan-not-sent">3<', html)
    assert "No address: the row has no email address or phone number." in html
    assert not Message.objects.exists()  # looking sends nothing


def test_an_unknown_placeholder_on_the_page_is_refused_and_nothing_is_sent(client, manager, demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    client.force_login(manager)

    answer = client.post(
        f"/links/{batch.pk}/send/", page_data(batch, sms_en="Hi {first_name}: {link}", action="send", expected="3")
    )

    assert answer.status_code == 400
    assert "The SMS text (English) uses {first_name}, which is not a placeholder" in answer.content.decode()
    assert not Message.objects.exists()


def test_sending_from_the_page_needs_the_count_it_confirmed_and_a_manager(
    client, manager, viewer, demo, tmp_path, django_capture_on_commit_callbacks
):
    batch = make_batch(demo, tmp_path)
    client.force_login(viewer)
    assert client.get(f"/links/{batch.pk}/send/").status_code == 403
    assert client.post(f"/links/{batch.pk}/send/", page_data(batch, action="send", expected="3")).status_code == 403

    client.force_login(manager)
    stale = client.post(f"/links/{batch.pk}/send/", page_data(batch, action="send", expected="4"))
    assert stale.status_code == 400 and "The rows to send changed" in stale.content.decode()
    assert not Message.objects.exists()

    with django_capture_on_commit_callbacks() as callbacks:
        sent = client.post(f"/links/{batch.pk}/send/", page_data(batch, action="send", expected="3"))
    assert sent.status_code == 302 and sent["Location"].endswith(f"/links/{batch.pk}/#delivery")
    # The page records the send and hands it to a worker: nothing is queued in the request.
    record = LinkBatchSend.objects.get()
    assert (record.status, record.by, record.channels, len(callbacks)) == ("queued", manager, "email,sms", 1)
    assert not Message.objects.exists()
    waiting = client.get(f"/links/{batch.pk}/").content.decode()
    assert 'data-send-status="queued"' in waiting and "queueing the messages" in waiting
    status_url = f"/links/{batch.pk}/sends/{record.pk}/status.json"
    assert f'data-run-status="{status_url}"' in waiting  # the page reloads once the worker is done
    assert client.get(status_url).json() == {"id": record.pk, "status": "queued", "finished": False, "error": ""}

    record = sending.batch_send_run(send_id=record.pk)  # what the worker's task does
    assert Message.objects.count() == 3
    assert (record.status, record.queued, record.skipped, record.attempt) == ("succeeded", 3, 3, 1)
    assert client.get(status_url).json()["finished"] is True
    assert sending.batch_send_run(send_id=record.pk).attempt == 1  # a task delivered twice finds it done

    detail = client.get(f"/links/{batch.pk}/").content.decode()
    table = re.search(r'id="delivery-table">(.*?)</table>', detail, re.S).group(1)
    assert table.count('class="badge status-queued"') == 3
    assert re.search(r'id="funnel-sent-email">0<', detail) and 'id="send-cancel"' in detail


def test_a_send_the_worker_cannot_make_fails_with_the_reason_on_the_batch_page(client, manager, demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    send = sending.batch_send_request(batch=batch, options=options_of(batch), user=manager, enqueue=False)
    LinkBatch.objects.filter(pk=batch.pk).update(status=LinkBatch.Status.RUNNING)  # made again meanwhile

    send = sending.batch_send_run(send_id=send.pk)

    assert (send.status, send.error) == ("failed", "Links can be sent once the batch has finished making them.")
    assert not Message.objects.exists()
    LinkBatch.objects.filter(pk=batch.pk).update(status=LinkBatch.Status.SUCCEEDED)  # the batch page shows sends
    client.force_login(manager)
    page = client.get(f"/links/{batch.pk}/").content.decode()
    assert 'data-send-status="failed"' in page and "Links can be sent once the batch has finished" in page


def test_the_sweep_hands_a_send_whose_worker_died_or_whose_task_was_lost_to_another_worker(
    manager, demo, tmp_path, settings, django_capture_on_commit_callbacks
):
    batch = make_batch(demo, tmp_path)
    died = sending.batch_send_request(batch=batch, options=options_of(batch), user=manager, enqueue=False)
    other = make_batch(demo, tmp_path)  # one send of a batch at a time
    lost = sending.batch_send_request(batch=other, options=options_of(other), user=manager, enqueue=False)
    long_ago = timezone.now() - timedelta(hours=1)
    # A worker took the first and died in its transaction (nothing of it was queued); the second's task was lost.
    LinkBatchSend.objects.filter(pk=died.pk).update(
        status="running", attempt=1, started_at=long_ago, heartbeat_at=long_ago
    )
    LinkBatchSend.objects.filter(pk=lost.pk).update(queued_at=long_ago)

    with django_capture_on_commit_callbacks() as callbacks:
        assert sending.batch_sends_sweep() == 2
    assert len(callbacks) == 2 and LinkBatchSend.objects.get(pk=died.pk).status == "queued"

    died, lost = sending.batch_send_run(send_id=died.pk), sending.batch_send_run(send_id=lost.pk)
    assert (died.status, died.attempt, died.queued) == ("succeeded", 2, 3)
    assert (lost.status, lost.queued, lost.already) == ("succeeded", 3, 0)
    assert Message.objects.count() == 6  # each row of each batch once


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_send_pressed_on_the_page_is_queued_by_a_real_worker(
    celery_worker_process, live_sandbox, client, manager, tmp_path
):
    batch = make_batch(demo_template(), tmp_path)  # in the MEDIA_ROOT the worker process reads too
    options = sending.SendOptions(channels=(EMAIL,), columns=sending.send_columns_guess(batch=batch))
    expected = sending.batch_send_plan(batch=batch, options=options).messages
    client.force_login(manager)

    answer = client.post(
        f"/links/{batch.pk}/send/", page_data(batch, channels="email", action="send", expected=str(expected))
    )

    assert answer.status_code == 302
    send = wait_for(
        lambda: LinkBatchSend.objects.filter(status="succeeded").first(), timeout=30, message="the worker's send"
    )
    assert (send.queued, send.attempt) == (expected, 1) and expected > 0
    assert Message.objects.filter(subject_key__startswith=f"batch:{batch.pk}:").count() == expected


def test_one_send_of_a_batch_at_a_time_and_cancel_stops_a_send_still_queueing(client, manager, viewer, demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    first = sending.batch_send_request(batch=batch, options=options_of(batch), user=manager, enqueue=False)
    with pytest.raises(sending.SendError, match="being sent already"):
        sending.batch_send_request(batch=batch, options=options_of(batch), user=manager, enqueue=False)

    sending.batch_send_cancel(batch=batch, user=manager)
    first = sending.batch_send_run(send_id=first.pk)  # the worker's task, arriving after the cancel

    assert (first.status, first.error) == ("failed", "Cancelled before its messages were queued.")
    assert not Message.objects.exists()
    assert sending.batch_send(batch=batch, options=options_of(batch), user=manager).queued == 3  # a new send may go
    client.force_login(viewer)
    other = make_batch(demo, tmp_path)
    assert client.get(f"/links/{other.pk}/sends/{first.pk}/status.json").status_code == 404  # not that batch's


def test_an_unexpected_failure_ends_the_send_failed_with_a_reference_not_running(manager, demo, tmp_path):
    from django.core.files.storage import default_storage

    batch = make_batch(demo, tmp_path)
    send = sending.batch_send_request(batch=batch, options=options_of(batch), user=manager, enqueue=False)
    default_storage.delete(batch.output_file.name)  # the links file gone from storage before the worker came

    send = sending.batch_send_run(send_id=send.pk)

    assert send.status == "failed" and send.finished_at is not None
    assert send.error.startswith("Something went wrong while queueing the messages (reference ")
    assert not Message.objects.exists()


def test_a_sends_options_reach_the_worker_as_they_were_chosen(manager, demo, tmp_path):
    batch = make_batch(demo, tmp_path)
    chosen = sending.SendOptions(
        channels=(SMS, EMAIL),
        columns=sending.SendColumns(email="email", phone="phone", name="name", language=""),
        default_language="en",
        messages={
            **sending.DEFAULT_MESSAGES,
            "en": sending.LanguageMessage("Your card", "Hi {name}: {link}", "Card for {name}: {link}"),
        },
        max_segments=3,
    )
    send = sending.batch_send_request(batch=batch, options=chosen, user=manager, enqueue=False)
    assert sending._options_from_json(LinkBatchSend.objects.get(pk=send.pk).options) == chosen
    # A send recorded before an option existed takes that option's default.
    older = {key: value for key, value in send.options.items() if key != "max_segments"}
    assert sending._options_from_json(older).max_segments == sending.SendOptions().max_segments


def test_a_test_send_reaches_the_managers_own_address_and_is_not_counted(client, manager, demo, tmp_path, smtp_server):
    batch = make_batch(demo, tmp_path)
    client.force_login(manager)

    answer = client.post(f"/links/{batch.pk}/send/", page_data(batch, action="test", test_email="maria@issuer.example"))

    assert answer.status_code == 200 and "EMAIL to maria@issuer.example: sent" in answer.content.decode()
    [(recipients, message)] = smtp_server.messages
    assert recipients == ["maria@issuer.example"] and message["Subject"] == "[Test] Kortið þitt er tilbúið"
    assert links_of(batch)[1] in message.get_body(preferencelist=("plain",)).get_content()
    assert message.get_content_type() == "multipart/alternative"
    assert not Message.objects.exists()


def test_reloading_the_page_a_test_send_returned_sends_nothing_again(client, manager, demo, tmp_path, smtp_server):
    batch = make_batch(demo, tmp_path)
    client.force_login(manager)
    page = client.get(f"/links/{batch.pk}/send/").content.decode()
    data = page_data(batch, action="test", test_email="maria@issuer.example", test_key=form_key_of(page))

    first = client.post(f"/links/{batch.pk}/send/", data).content.decode()
    reloaded = client.post(f"/links/{batch.pk}/send/", data).content.decode()  # the browser posts the same again

    assert "EMAIL to maria@issuer.example: sent" in first
    assert 'id="test-repeated"' in reloaded and "EMAIL to maria@issuer.example: sent" not in reloaded
    assert len(smtp_server.messages) == 1
    # The button pressed again on the page the test returned: another test.
    again = client.post(f"/links/{batch.pk}/send/", data | {"test_key": form_key_of(first)}).content.decode()
    assert "EMAIL to maria@issuer.example: sent" in again and len(smtp_server.messages) == 2
    # A test from another tab meanwhile does not make the first page's reload send again.
    other_tab = client.get(f"/links/{batch.pk}/send/").content.decode()
    client.post(f"/links/{batch.pk}/send/", data | {"test_key": form_key_of(other_tab)})
    client.post(f"/links/{batch.pk}/send/", data)
    assert len(smtp_server.messages) == 3


def test_a_test_that_went_nowhere_is_sent_on_a_reload(client, manager, demo, tmp_path, smtp_server, settings):
    batch = make_batch(demo, tmp_path)
    client.force_login(manager)
    page = client.get(f"/links/{batch.pk}/send/").content.decode()
    data = page_data(batch, action="test", test_email="maria@issuer.example", test_key=form_key_of(page))
    settings.EMAIL_PORT = free_port()  # nobody listens there: the test is not sent

    failed = client.post(f"/links/{batch.pk}/send/", data).content.decode()
    assert "EMAIL to maria@issuer.example: not sent" in failed
    settings.EMAIL_PORT = smtp_server.port
    retried = client.post(f"/links/{batch.pk}/send/", data).content.decode()  # the reload tries it again
    assert "EMAIL to maria@issuer.example: sent" in retried and 'id="test-repeated"' not in retried
    assert len(smtp_server.messages) == 1


def form_key_of(page: str) -> str:
    return re.search(r'name="test_key" value="([^"]+)"', page)[1]


def test_sent_messages_reach_the_smtp_server_each_with_its_own_rows_link_and_language(demo, tmp_path, smtp_server):
    holders = [(f"Holder {n}", f"holder{n}@example.is", "", "en" if n % 3 == 0 else "is") for n in range(1, 61)]
    batch = make_batch(demo, tmp_path, holders, "--jobs", "1")  # long links: the token tells the row
    assert send_command(batch, "--channel", "email")["queued"] == 60

    assert delivery_sending.send_queued(EMAIL) == 60

    links = links_of(batch)
    received = smtp_server.messages
    assert len(received) == 60
    for recipients, message in received:
        number = int(recipients[0].removeprefix("holder").split("@")[0])
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        assert links[number] in text and f'href="{links[number]}"' in html
        assert message["Content-Language"] == ("en" if number % 3 == 0 else "is")
        assert ("Hi Holder" if number % 3 == 0 else "Hæ Holder") in text
        payload = tokens.decode(links[number].rsplit("/", 1)[1], link_keys())
        assert (payload.batch_id, payload.row) == (batch.pk, number)
    assert send_command(batch, "--channel", "email")["queued"] == 0


def test_cancel_stops_the_rest_and_send_again_takes_failed_rows_only(client, manager, demo, tmp_path):
    holders = [(f"Holder {n}", f"holder{n}@example.is", "", "is") for n in range(1, 7)]
    batch = make_batch(demo, tmp_path, holders)
    send_command(batch, "--channel", "email")
    key = f"batch:{batch.pk}:row:"
    # What workers and the relay made of the first rows (the outbox's own tests send them for real).
    Message.objects.filter(subject_key=key + "1").update(status=Message.SENT)
    Message.objects.filter(subject_key=key + "2").update(status=Message.FAILED, reason="The relay refused (550).")
    client.force_login(manager)

    client.post(f"/links/{batch.pk}/send/cancel/")
    statuses = dict(Message.objects.values_list("subject_key", "status"))
    assert [statuses[key + str(n)] for n in range(1, 7)] == ["sent", "failed"] + ["skipped"] * 4

    client.post(f"/links/{batch.pk}/send/again/")
    statuses = dict(Message.objects.values_list("subject_key", "status"))
    assert [statuses[key + str(n)] for n in range(1, 7)] == ["sent", "queued"] + ["skipped"] * 4


def test_the_funnel_counts_sent_delivered_opened_and_claimed_and_the_table_filters_and_exports(
    client, manager, demo, tmp_path
):
    batch = make_batch(demo, tmp_path)
    send_command(batch, "--channel", "email,sms")
    key = f"batch:{batch.pk}:row:"
    Message.objects.filter(subject_key=key + "1").update(status=Message.DELIVERED)
    Message.objects.filter(subject_key=key + "2").update(status=Message.SENT)
    Message.objects.filter(subject_key=key + "3").update(status=Message.FAILED, reason="Twilio said 21610: =STOP")
    links = links_of(batch)
    holder = Client(HTTP_USER_AGENT="Mozilla/5.0 (iPhone) Mobile Safari")
    holder.get(links[1].removeprefix("http://127.0.0.1:8000"))
    holder.get(links[2].removeprefix("http://127.0.0.1:8000"))
    holder.get(links[2].removeprefix("http://127.0.0.1:8000"))  # a second open of a row counts once
    # Row 2's claim, as the claim flow records it (that flow, against SmartPages, is test_claim_pages's).
    LinkClaim.objects.create(template=demo, batch_id=batch.pk, row=2, outcome=LinkClaim.Outcome.NEW)
    LinkClaim.objects.create(template=demo, batch_id=batch.pk, row=2, outcome=LinkClaim.Outcome.EXISTING)
    client.force_login(manager)

    detail = client.get(f"/links/{batch.pk}/").content.decode()

    assert re.search(r'id="funnel-sent-email">2<', detail) and re.search(r'id="funnel-delivered-email">1<', detail)
    assert re.search(r'id="funnel-sent-sms">0<', detail)
    assert re.search(r'id="funnel-opened">2<', detail) and re.search(r'id="funnel-claimed">1<', detail)
    failed = client.get(f"/links/{batch.pk}/?status=failed").content.decode()
    table = re.search(r'id="delivery-table">(.*?)</table>', failed, re.S).group(1)
    assert table.count('class="badge status-') == 1 and "status-failed" in table and "21610" in table
    exported = client.get(f"/links/{batch.pk}/messages.csv?status=failed")
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0][:5] == ["row", "channel", "to", "language", "status"]
    assert [row[:5] for row in rows[1:]] == [["3", "sms", "+3548250003", "is", "failed"]]
    assert rows[1][5] == "Twilio said 21610: =STOP"  # no formula: only a cell starting with = is guarded


def test_a_batch_in_passkits_format_is_sent_from_its_smarturl_column(demo, tmp_path):
    batch = make_batch(demo, tmp_path, HOLDERS[:3], "--short-links", "--format", "passkit")
    assert batch.output_format == "passkit"

    assert send_command(batch, "--channel", "email,sms")["queued"] == 3

    links = links_of(batch)
    assert all(links[n].startswith("http://127.0.0.1:8000/s/") for n in (1, 2, 3))
    assert links[1] in Message.objects.get(subject_key=f"batch:{batch.pk}:row:1").text


def test_a_person_listed_twice_gets_one_message_and_a_family_at_one_address_gets_one_each(demo, tmp_path):
    """Found by a walk through `make run`: Laura's two rows (her links show one pass) got two emails, and after
    the send the page still said "5 holders get a message" for a send that would queue none."""
    holders = [
        ["Laura Loopy", "laura@example.com", "", "en"],
        ["Anna Jónsdóttir", "fjolskyldan@example.is", "", "is"],
        ["Laura Loopy", "Laura@Example.com", "", "en"],  # the same person, the address typed otherwise
        ["Jón Jónsson", "fjolskyldan@example.is", "", "is"],  # her son, the family's address
    ]
    batch = make_batch(demo, tmp_path, holders)
    options = sending.SendOptions(channels=(EMAIL,), columns=sending.send_columns_guess(batch=batch))

    plan = sending.batch_send_plan(batch=batch, options=options)
    assert (plan.messages, plan.not_sent, plan.already) == (3, 1, 0)
    assert [entry["example"] for entry in plan.summary] == [
        "The same name and address as row 1: one message is enough."
    ]
    assert send_command(batch, "--channel", "email") == {"queued": 3, "skipped": 1, "already": 0, "batch": batch.pk}
    assert sorted(Message.objects.values_list("to", flat=True)) == [
        "fjolskyldan@example.is",
        "fjolskyldan@example.is",
        "laura@example.com",
    ]

    again = sending.batch_send_plan(batch=batch, options=options)
    assert (again.messages, again.already) == (0, 3)
    # Without a name column nobody can tell two rows at one address apart: each row gets its message.
    nameless = dataclasses.replace(options, columns=dataclasses.replace(options.columns, name=""))
    assert sending.batch_send_plan(batch=batch, options=nameless).not_sent == 0
