"""Managing campaign uploads on PostgreSQL: who may download the links file and the record of every download,
deleting an upload (audited), the sample CSV, new columns for a finished batch, the single-use option, the
column limit, the batch funnel and the dashboard's charts."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from links import services
from links.keyring import link_keys
from links.models import LinkBatch, LinkBatchEvent, LinkClaim
from links.samples import link_sample_csv
from links.services.claim_days import claim_days_reconcile
from links.tokens import decode
from members.models import Member
from members.services import autofill
from members.tests.factories import make_member

from .claim_factories import nonce_of
from .factories import DATA, every_format_template, make_links

pytestmark = pytest.mark.django_db


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- downloads ---------------------------------------------------------------------------------------------------
def test_a_viewer_is_refused_the_links_file_but_gets_the_errors_file_and_every_download_is_listed(
    client, viewer, manager, demo
):
    batch = make_links(demo, DATA / "10_missing_mandatory.csv", user=manager)
    client.force_login(viewer)
    page = client.get(reverse("links:batch_detail", args=[batch.pk])).text
    assert "Download links" not in page and "Download errors only" in page
    assert client.get(reverse("links:batch_download", args=[batch.pk, "output"])).status_code == 403
    errors = client.get(reverse("links:batch_download", args=[batch.pk, "errors"]))
    assert errors.status_code == 200 and len(_rows(_body(errors))) == 3

    client.force_login(manager)
    links = client.get(reverse("links:batch_download", args=[batch.pk, "output"]))
    assert links.status_code == 200 and sum(bool(row["smartpass_link"]) for row in _rows(_body(links))) == 1

    # Two downloads recorded (the refused one is not a download), newest first, with who and which file.
    events = list(LinkBatchEvent.objects.filter(batch_id=batch.pk).values_list("by_name", "action", "file"))
    assert events == [("maria", "downloaded", "output"), ("vigdis", "downloaded", "errors")]
    listed = client.get(reverse("links:batch_detail", args=[batch.pk])).text
    table = listed[listed.index('id="batch-events"') :]
    assert re.search(r"maria</td>\s*<td>downloaded the links file", table)
    assert re.search(r"vigdis</td>\s*<td>downloaded the errors file", table)


# --- deleting an upload ------------------------------------------------------------------------------------------
def test_a_manager_deletes_an_upload_after_confirming_and_the_record_and_the_links_outlive_it(
    client, manager, viewer, demo, settings, django_capture_on_commit_callbacks
):
    settings.CLAIM_RATE = "100000/m"
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    files = [batch.input_file.name, batch.output_file.name, batch.errors_file.name]
    link = _rows(default_storage.open(batch.output_file.name).read())[0]["smartpass_link"]
    assert all(default_storage.exists(name) for name in files)

    client.force_login(viewer)
    assert client.get(reverse("links:batch_delete", args=[batch.pk])).status_code == 403
    assert client.post(reverse("links:batch_delete", args=[batch.pk])).status_code == 403
    client.force_login(manager)
    confirm = client.get(reverse("links:batch_delete", args=[batch.pk]))
    assert confirm.status_code == 200 and "Delete this upload?" in confirm.text and "keep working" in confirm.text
    assert LinkBatch.objects.filter(pk=batch.pk).exists()  # opening the confirmation deletes nothing

    with django_capture_on_commit_callbacks(execute=True):
        deleted = client.post(reverse("links:batch_delete", args=[batch.pk]), follow=True)
    assert "and its files are deleted" in deleted.text
    assert not LinkBatch.objects.filter(pk=batch.pk).exists()
    assert not any(default_storage.exists(name) for name in files)
    event = LinkBatchEvent.objects.get(action="deleted")
    assert (event.batch_id, event.batch_name, event.by_name, event.template_id) == (
        batch.pk,
        "01_plain_utf8.csv",
        "maria",
        demo.pk,
    )
    assert event.detail["rows"] == 3 and event.detail["links"] == 3 and event.detail["uploaded_by"] == "maria"
    history = client.get(reverse("links:batch_list")).text
    assert 'id="deleted-uploads"' in history and "01_plain_utf8.csv" in history

    # A link sent out before the deletion still claims its pass.
    path = "/p/" + link.rsplit("/p/", 1)[1]
    claimed = client.post(path, {"nonce": nonce_of(client.get(path).text)})
    assert claimed.status_code == 302 and Member.objects.get().source_batch_id == batch.pk


def test_a_batch_being_made_cannot_be_deleted(client, manager, demo):
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    LinkBatch.objects.filter(pk=batch.pk).update(status="running", started_at=timezone.now())
    client.force_login(manager)
    response = client.post(reverse("links:batch_delete", args=[batch.pk]))
    assert response.status_code == 400 and "still being made" in response.text
    assert LinkBatch.objects.filter(pk=batch.pk).exists() and not LinkBatchEvent.objects.exists()


# --- the sample CSV ----------------------------------------------------------------------------------------------
def test_the_sample_csv_of_the_demo_template_uploads_as_three_clean_links(client, viewer, demo):
    client.force_login(viewer)
    upload_page_link = reverse("links:template_sample", args=[demo.pk])
    assert upload_page_link in client.get(reverse("template_detail", args=[demo.pk])).text
    response = client.get(upload_page_link)
    assert response["Content-Disposition"].endswith('-sample.csv"')
    rows = _rows(response.content)
    assert list(rows[0]) == [field.identifier for field in demo.input_fields]
    assert [row["name"] for row in rows] == ["Guðrún Jónsdóttir", "Sigurður Einarsson", "Þórdís Ólafsdóttir"]

    batch = _process(demo, response.content)
    assert (batch.rows_done, batch.links, batch.errors, batch.warnings, batch.duplicates) == (3, 3, 0, 0, 0)


def test_the_sample_csv_fits_every_format_the_allowed_email_domains_and_the_age_limit(media):
    template = every_format_template(allowed_domains=["skoli.is"], min_age=18)
    text = link_sample_csv(template=template)
    rows = _rows(text.encode())
    assert {row["email"].rsplit("@", 1)[1] for row in rows} == {"skoli.is"}
    assert rows[0]["kennitala"] == "120385-2089" and rows[0]["phone"] == "+354 661 2345"
    batch = _process(template, text.encode(), mapping={column: column for column in rows[0]})
    assert (batch.rows_done, batch.links, batch.errors, batch.warnings) == (3, 3, 0, 0)


def _process(template, data: bytes, mapping: dict | None = None) -> LinkBatch:
    batch = services.link_batch_create(
        template=template, uploaded_by=None, file=SimpleUploadedFile("sample.csv", data, "text/csv")
    )
    services.link_batch_confirm(batch=batch, mapping=mapping or batch.mapping, enqueue=False)
    return services.link_batch_process(batch_id=batch.pk)


# --- new columns for a finished batch ----------------------------------------------------------------------------
def test_a_manager_changes_the_columns_of_a_finished_batch_and_runs_it_again(
    client, manager, viewer, demo, django_capture_on_commit_callbacks
):
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    client.force_login(viewer)
    assert client.get(reverse("links:batch_remap", args=[batch.pk])).status_code == 403
    client.force_login(manager)
    page = client.get(reverse("links:batch_remap", args=[batch.pk]))
    assert "Change the columns and run again" in page.text
    assert [page.context["form"][f"col_{i}"].value() for i in range(3)] == ["name", "email", "phone"]

    bad = client.post(reverse("links:batch_remap", args=[batch.pk]), {"col_0": "name", "col_1": "", "col_2": ""})
    assert bad.status_code == 400 and "Choose the column for Netfang / Email" in bad.text
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        done = client.post(reverse("links:batch_remap", args=[batch.pk]), {"col_0": "name", "col_1": "email"})
    assert done.status_code == 302 and len(callbacks) == 1  # the task goes out after the commit
    batch.refresh_from_db()
    assert batch.status == "queued" and batch.mapping == {"name": "name", "email": "email"}

    batch = services.link_batch_process(batch_id=batch.pk)
    output = _rows(default_storage.open(batch.output_file.name).read())
    payload = decode(output[0]["smartpass_link"].rsplit("/", 1)[1], link_keys())
    assert batch.status == "succeeded" and payload.fields == {"name": "Anna Jónsdóttir", "email": "anna@example.is"}
    event = LinkBatchEvent.objects.get(action="remapped")
    assert event.detail["old_mapping"]["phone"] == "phone" and "phone" not in event.detail["new_mapping"]


# --- single use --------------------------------------------------------------------------------------------------
def test_the_upload_page_offers_one_pass_per_row_and_the_batch_page_says_so(client, manager, demo):
    client.force_login(manager)
    data = (DATA / "01_plain_utf8.csv").read_bytes()
    client.post(
        reverse("links:upload", args=[demo.pk]),
        {"file": SimpleUploadedFile("a.csv", data, "text/csv"), "single_use": "on"},
    )
    client.post(reverse("links:upload", args=[demo.pk]), {"file": SimpleUploadedFile("b.csv", data, "text/csv")})
    single, plain = LinkBatch.objects.get(original_name="a.csv"), LinkBatch.objects.get(original_name="b.csv")
    assert single.single_use and not plain.single_use  # default off
    page = client.get(reverse("links:batch_detail", args=[single.pk])).text
    assert re.search(r'id="single-use">yes', page)
    # A second click of a link makes a second pass only without one pass per row and without autofill: the
    # column check says so (Percy's two passes in the seed article) and where to turn autofill on.
    assert 'id="autofill-off-note"' not in page
    page = client.get(reverse("links:batch_detail", args=[plain.pk])).text
    assert 'id="autofill-off-note"' in page and "gets a second pass" in page
    assert reverse("members:autofill_settings", args=[demo.pk]) in page
    autofill.autofill_setting_change(template=demo, source="email")
    page = client.get(reverse("links:batch_detail", args=[plain.pk])).text
    assert 'id="autofill-off-note"' not in page and 'id="autofill-note"' in page


# --- the column limit --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", [100_000, 1_500])
def test_a_file_wider_than_the_column_limit_is_refused_at_upload_and_by_the_command(
    client, manager, demo, tmp_path, columns
):
    header = ",".join(f"c{i}" for i in range(columns))
    data = f"{header}\n{','.join('x' for _ in range(columns))}\n".encode()
    client.force_login(manager)
    response = client.post(reverse("links:upload", args=[demo.pk]), {"file": SimpleUploadedFile("wide.csv", data)})
    assert response.status_code == 200
    assert f"The file has {columns:,} columns; at most 200 can be read." in response.text
    assert not LinkBatch.objects.exists()

    source = tmp_path / "wide.csv"
    source.write_bytes(data)
    with pytest.raises(CommandError, match=f"The file has {columns:,} columns; at most 200"):
        call_command("generate_links", "--template", str(demo.pk), str(source), str(tmp_path / "out.csv"))
    assert not LinkBatch.objects.exists()


def test_the_column_limit_is_a_setting(client, manager, demo, settings):
    settings.LINKS_MAX_COLUMNS = 2
    client.force_login(manager)
    data = (DATA / "01_plain_utf8.csv").read_bytes()  # three columns
    response = client.post(reverse("links:upload", args=[demo.pk]), {"file": SimpleUploadedFile("a.csv", data)})
    assert "The file has 3 columns; at most 2 can be read." in response.text


# --- results at a glance -----------------------------------------------------------------------------------------
def _claim(template, *, batch_id=None, days_ago=0, outcome="new"):
    claim = LinkClaim.objects.create(template=template, batch_id=batch_id, outcome=outcome)
    LinkClaim.objects.filter(pk=claim.pk).update(at=timezone.now() - timedelta(days=days_ago))


def test_the_batch_page_shows_its_funnel_and_its_claims_per_day(client, viewer, manager, demo):
    batch = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    other = make_links(demo, DATA / "01_plain_utf8.csv", user=manager)
    for days_ago in (0, 0, 3):
        _claim(demo, batch_id=batch.pk, days_ago=days_ago)
    _claim(demo, batch_id=other.pk)
    _claim(demo, batch_id=batch.pk, days_ago=40)  # outside the 30 days
    make_member(demo, name="Anna", email="anna@example.is", source="link", source_batch_id=batch.pk)
    LinkBatch.objects.filter(pk=batch.pk).update(duplicate_claims=2)

    client.force_login(viewer)
    page = client.get(reverse("links:batch_detail", args=[batch.pk])).text
    funnel = [
        re.search(rf'id="{name}">([0-9,]+)<', page).group(1)
        for name in (
            "funnel-rows",
            "funnel-links",
            "claims-count",
            "claim-members-created",
            "claim-duplicates-prevented",
        )
    ]
    assert funnel == ["3", "3", "3", "1", "2"]
    chart = page[page.index('id="batch-claims-chart"') :]
    assert chart.count('<rect class="bar"') == 30
    table = chart[chart.index("<table") : chart.index("</table>")]
    today = timezone.localdate()
    assert re.search(rf"<th scope=\"row\">{today.day} {today:%b}</th><td class=\"num\">2</td>", table)
    assert sum(int(n) for n in re.findall(r'<td class="num">(\d+)</td>', table)) == 3


def test_the_dashboard_draws_claims_per_day_and_members_by_status_and_flags_stuck_members(client, viewer, demo):
    for days_ago in (0, 1, 1, 29, 30):
        _claim(demo, days_ago=days_ago)
    old = timezone.now() - timedelta(hours=2)
    stuck = make_member(demo, name="Fastur", email="fastur@example.is", status="pending")
    fresh = make_member(demo, name="Nýr", email="nyr@example.is", status="pending")
    failed = make_member(demo, name="Villa", email="villa@example.is", status="failed")
    make_member(demo, name="Gild", email="gild@example.is", status="issued")
    Member.objects.filter(pk__in=[stuck.pk, failed.pk]).update(created_at=old)
    # The claims were written straight to the table, as an import would: the reconcile job brings the
    # dashboard's daily roll-up up to them (claims through the claim flow count at once: test_dashboard_counts).
    claim_days_reconcile()

    client.force_login(viewer)
    page = client.get(reverse("dashboard")).text
    claims_chart = page[page.index('id="claims-chart"') : page.index('id="status-chart"')]
    assert claims_chart.count('<rect class="bar"') == 30 and "4 claims in all" in claims_chart
    assert "<svg" in claims_chart and 'role="img"' in claims_chart and "<script" not in claims_chart
    status_chart = page[page.index('id="status-chart"') :]
    status_table = status_chart[status_chart.index("<table") : status_chart.index("</table>")]
    assert re.findall(r'<th scope="row">(\w+)</th><td class="num">(\d+)</td>', status_table) == [
        ("Pending", "2"),
        ("Issued", "1"),
        ("Failed", "1"),
        ("Voided", "0"),
        ("Redeemed", "0"),
    ]
    flags = page[page.index('id="stuck-members"') :]
    assert "<strong>1</strong> pass still pending after more than an hour" in flags
    assert "<strong>1</strong> failed pass older than an hour" in flags

    # The flag's link lists exactly the stuck member.
    href = re.search(r'href="(/members/\?status=pending[^"]+)"', flags).group(1).replace("&amp;", "&")
    listed = client.get(href).text
    assert "Fastur" in listed and "Nýr" not in listed and 'id="older-than"' in listed
    assert fresh.pk not in [m.pk for m in client.get(href).context["page"]]
