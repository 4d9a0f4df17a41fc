"""The staff pages as a person uses them: upload, preview and mapping, the batch page, downloads, and who may
do what."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from links import services
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode
from templates_sync.models import PassTemplate

from .factories import DATA, make_links

pytestmark = pytest.mark.django_db

CAMPAIGN = "Nafn,Netfang,Sími,Hópur\nAnna Jónsdóttir,anna@example.is,6123456,A\nBjörn,ekki-netfang,,B\n".encode()


def _upload(client, template, data: bytes = CAMPAIGN, name: str = "vor.csv", delimiter: str = ""):
    return client.post(
        reverse("links:upload", args=[template.pk]),
        {"file": SimpleUploadedFile(name, data, "text/csv"), "delimiter": delimiter},
    )


def test_a_manager_uploads_checks_the_columns_and_gets_one_link_per_good_row(
    client, manager, demo, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    detail = client.get(reverse("template_detail", args=[demo.pk]))
    assert "Generate links" in detail.text

    response = _upload(client, demo)
    batch = LinkBatch.objects.get()
    assert response.url == reverse("links:batch_detail", args=[batch.pk])

    page = client.get(response.url)
    assert "2 rows read (comma-separated, UTF-8)" in page.text
    assert "Anna Jónsdóttir" in page.text  # the preview
    form = page.context["form"]
    # Labels matched by their Icelandic half ("Nafn / Name"), "Sími" by its alias; "Hópur" matches nothing.
    assert [form[f"col_{i}"].value() for i in range(4)] == ["name", "email", "phone", ""]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        confirmed = client.post(
            reverse("links:batch_confirm", args=[batch.pk]),
            {"col_0": "name", "col_1": "email", "col_2": "phone", "col_3": ""},
        )
    assert confirmed.status_code == 302
    assert len(callbacks) == 1  # the task goes out only after the commit
    batch.refresh_from_db()
    assert batch.status == "queued" and batch.mapping == {"Nafn": "name", "Netfang": "email", "Sími": "phone"}
    queued_page = client.get(reverse("links:batch_detail", args=[batch.pk]))
    assert f'data-run-status="/links/{batch.pk}/status.json"' in queued_page.text

    services.link_batch_process(batch_id=batch.pk)  # what the worker does

    status = client.get(reverse("links:batch_status", args=[batch.pk])).json()
    assert status | {"total": 2, "done": 2} == status and status["finished"] and status["status"] == "succeeded"
    page = client.get(reverse("links:batch_detail", args=[batch.pk]))
    assert "Download links" in page.text and "Download errors only" in page.text
    download = client.get(reverse("links:batch_download", args=[batch.pk, "output"]))
    assert download["Content-Disposition"] == 'attachment; filename="vor-links.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig"))))
    assert rows[0] == ["Nafn", "Netfang", "Sími", "Hópur", "smartpass_link", "error"]
    assert decode(rows[1][4].rsplit("/", 1)[1], link_keys()).fields == {
        "name": "Anna Jónsdóttir",
        "email": "anna@example.is",
        "phone": "+3546123456",
    }
    assert rows[2][4] == "" and "is not a valid email address" in rows[2][5]
    errors_only = client.get(reverse("links:batch_download", args=[batch.pk, "errors"]))
    error_rows = list(csv.reader(io.StringIO(b"".join(errors_only.streaming_content).decode("utf-8-sig"))))
    assert [row[0] for row in error_rows] == ["Nafn", "Björn"]


def test_the_strict_choice_on_the_mapping_page_is_saved_with_the_batch(
    client, manager, demo, django_capture_on_commit_callbacks
):
    client.force_login(manager)
    _upload(client, demo, "Nafn,Netfang,Sími\nAnna,anna@example.is,600 5729\n".encode())
    batch = LinkBatch.objects.get()
    page = client.get(reverse("links:batch_detail", args=[batch.pk]))
    assert page.context["form"]["strict"].value() is False  # forgiving unless chosen
    assert 'name="strict"' in page.text and "no link for a row with an invalid optional value" in page.text

    mapping = {"col_0": "name", "col_1": "email", "col_2": "phone"}
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("links:batch_confirm", args=[batch.pk]), {**mapping, "strict": "on"})
    batch.refresh_from_db()
    assert batch.strict is True and batch.status == "queued"

    batch = services.link_batch_process(batch_id=batch.pk)  # what the worker does
    assert (batch.links, batch.errors) == (0, 1)
    assert "refuse the row (strict)" in client.get(reverse("links:batch_detail", args=[batch.pk])).text


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "The file is empty."),
        (b"name,email,phone\r\n", "The file has column names but no rows; add one row per pass holder."),
        ((DATA / "18_binary_junk.csv").read_bytes(), "This file does not look like a CSV text file."),
        ((DATA / "03_cp1252_icelandic.csv").read_bytes()[:20] + b"\x81\n", "The file is not valid Windows-1252 text"),
    ],
)
def test_a_bad_file_is_refused_on_the_form_with_a_sentence(client, manager, demo, data, message):
    client.force_login(manager)
    response = _upload(client, demo, data)
    assert response.status_code == 200
    assert message in response.text
    assert not LinkBatch.objects.exists()


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read(client, manager, demo, settings):
    settings.LINKS_MAX_UPLOAD_BYTES = 1024
    client.force_login(manager)
    response = _upload(client, demo, (DATA / "21_over_byte_limit.csv").read_bytes())
    assert "The file is 2.2 KB; the limit is 1 KB." in response.text
    assert "At most 1.0\xa0KB, 1,000,000 rows and 200 columns." in response.text


def test_the_delimiter_can_be_chosen(client, manager, demo):
    client.force_login(manager)
    _upload(client, demo, "name;email\nJón; eldri;jon@example.is\n".encode(), delimiter=";")
    batch = LinkBatch.objects.get()
    assert batch.delimiter == ";" and batch.header == ["name", "email"]


def test_the_mapping_must_fill_every_issuer_field_once(client, manager, demo):
    client.force_login(manager)
    _upload(client, demo)
    batch = LinkBatch.objects.get()
    response = client.post(
        reverse("links:batch_confirm", args=[batch.pk]), {"col_0": "name", "col_1": "", "col_2": "name", "col_3": ""}
    )
    assert response.status_code == 400
    assert "The columns “Nafn” and “Sími” both fill Nafn / Name; choose one." in response.text
    assert "Choose the column for Netfang / Email: every pass needs it." in response.text
    batch.refresh_from_db()
    assert batch.status == "uploaded"


def test_a_template_that_cannot_issue_is_refused_before_upload(client, manager, demo):
    PassTemplate.objects.filter(pk=demo.pk).update(status="VOIDED")
    client.force_login(manager)
    assert "Generate links" not in client.get(reverse("template_detail", args=[demo.pk])).text
    page = client.get(reverse("links:upload", args=[demo.pk]))
    assert "Links cannot be made for this template: This template is voided on SmartPages." in page.text
    assert 'type="file"' not in page.text
    _upload(client, demo)
    assert not LinkBatch.objects.exists()


def test_a_viewer_sees_the_history_and_downloads_but_cannot_upload(client, viewer, manager, demo):
    batch = make_links(demo, DATA / "10_missing_mandatory.csv", user=manager)
    client.force_login(viewer)
    assert "Generate links" not in client.get(reverse("template_detail", args=[demo.pk])).text
    assert client.get(reverse("links:upload", args=[demo.pk])).status_code == 403
    assert _upload(client, demo).status_code == 403  # a direct POST
    assert LinkBatch.objects.count() == 1

    history = client.get(reverse("links:batch_list"))
    assert "10_missing_mandatory.csv" in history.text and "maria" in history.text
    assert client.get(reverse("links:batch_download", args=[batch.pk, "errors"])).status_code == 200
    assert client.post(reverse("links:batch_rerun", args=[batch.pk])).status_code == 403


def test_a_viewer_cannot_confirm_a_mapping(client, viewer, manager, demo):
    client.force_login(manager)
    _upload(client, demo)
    batch = LinkBatch.objects.get()
    client.force_login(viewer)
    page = client.get(reverse("links:batch_detail", args=[batch.pk]))
    assert "A manager confirms the columns" in page.text
    response = client.post(reverse("links:batch_confirm", args=[batch.pk]), {"col_0": "name", "col_1": "email"})
    assert response.status_code == 403
    batch.refresh_from_db()
    assert batch.status == "uploaded"


def test_downloads_need_a_login(client, manager, demo):
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    response = client.get(reverse("links:batch_download", args=[batch.pk, "output"]))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    assert client.get(reverse("links:batch_status", args=[batch.pk])).status_code == 302


def test_history_per_template_and_the_panels(client, manager, demo):
    make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    make_links(demo, DATA / "09_duplicate_rows.csv", user=manager)
    client.force_login(manager)
    detail = client.get(reverse("template_detail", args=[demo.pk]))
    assert "Upload history (2)" in detail.text and "09_duplicate_rows.csv" in detail.text
    per_template = client.get(reverse("links:template_batches", args=[demo.pk]))
    assert per_template.text.count("<tr>") == 3  # header and two uploads
    dashboard = client.get(reverse("dashboard"))
    assert "SmartPass links made from 2 uploads" in dashboard.text
    assert '<span class="stat-value">7</span>' in dashboard.text
    assert 'href="/links/"' in dashboard.text  # the nav item and the card


def test_a_failed_batch_can_be_run_again(client, manager, demo, django_capture_on_commit_callbacks):
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    LinkBatch.objects.filter(pk=batch.pk).update(status="failed", error="The worker was stopped.")
    client.force_login(manager)
    assert "Run again" in client.get(reverse("links:batch_detail", args=[batch.pk])).text
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(reverse("links:batch_rerun", args=[batch.pk]))
    assert len(callbacks) == 1
    batch = services.link_batch_process(batch_id=batch.pk)
    assert (batch.status, batch.links, batch.error) == ("succeeded", 3, "")
