"""The mapping page in Chromium with PassKit's example file (its columns that reach no pass, by name) and with a
Mac Excel file read again in another encoding; looked at 1280 and 390 px (screenshots into SHOTS_DIR when set); and the batch page naming rows whose link cannot
recognise its holder."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from conftest import login
from links.models import LinkBatch
from members.models import AutofillSetting
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

from .factories import DATA, make_links

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shots(page, name: str) -> None:
    folder = os.environ.get("SHOTS_DIR")
    if not folder:
        return
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=f"{folder}/{name}-{width}.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def upload(page, live_server, path, *, passkit_format: bool = False) -> None:
    page.goto(f"{live_server.url}/links/template/{DEMO_TEMPLATE_ID}/upload/")
    page.set_input_files("input[type=file]", str(path))
    if passkit_format:
        page.get_by_label("PassKit-compatible result file").check()
        expect(page.get_by_label("Encoding")).to_have_value("")
        shots(page, "upload-form")
    page.get_by_role("button", name="Upload and preview").click()


def test_passkits_file_on_the_mapping_page_names_every_column_that_reaches_no_pass(
    page, live_server, live_sandbox, manager, settings
):
    sync.templates_sync_all()
    login(page, live_server, "maria")
    upload(page, live_server, DATA / "passkit" / "example-member-data.csv", passkit_format=True)
    unused = page.locator("#unused-columns")
    expect(unused).to_contain_text("19 columns will not reach the pass")
    expect(unused).to_contain_text("members.member.points — PassKit's points and member data")
    expect(unused).to_contain_text("utm_source — PassKit's campaign tracking")
    expect(page.get_by_label("person.forename")).to_have_value("@forename:name")
    expect(page.get_by_label("universal.expiryDate")).to_have_value("@expirationDate")
    expect(page.get_by_label("meta.customField")).to_have_value("@back")
    expect(page.get_by_label("Read the file as")).to_have_value("utf-8")
    shots(page, "mapping-passkit-member")
    # Choosing a place for a column takes it off the list at once; leaving a column out puts it on.
    page.get_by_label("person.salutation").select_option("@back")
    expect(unused).to_contain_text("18 columns will not reach the pass")
    expect(unused.locator("li", has_text="person.salutation")).to_be_hidden()
    page.get_by_label("meta.customField").select_option("")
    expect(unused.locator("li", has_text="meta.customField")).to_be_visible()
    expect(unused).to_contain_text("19 columns will not reach the pass")
    batch = LinkBatch.objects.get()
    assert batch.output_format == "passkit"


def test_a_mac_excel_file_is_shown_as_read_and_read_again_in_the_encoding_chosen(
    page, live_server, live_sandbox, manager, settings, tmp_path
):
    sync.templates_sync_all()
    source = tmp_path / "mac.csv"
    source.write_bytes(
        "Nafn;Netfang\rGuðrún Jónsdóttir;gudrun@example.is\rÞórður Ævarsson;t@example.is\r".encode("mac_iceland")
    )
    login(page, live_server, "maria")
    upload(page, live_server, source)
    expect(page.get_by_text("2 rows read (semicolon-separated, Mac Icelandic)")).to_be_visible()
    preview = page.locator("table.preview")
    expect(preview).to_contain_text("Guðrún Jónsdóttir")
    page.get_by_label("Read the file as").select_option("cp1252")
    page.get_by_role("button", name="Read again").click()
    expect(page.get_by_text("2 rows read (semicolon-separated, Windows-1252)")).to_be_visible()
    expect(preview).to_contain_text("GuÝrœn J—nsd—ttir")
    shots(page, "mapping-encoding-wrong")
    page.get_by_label("Read the file as").select_option("mac_iceland")
    page.get_by_role("button", name="Read again").click()
    expect(preview).to_contain_text("Þórður Ævarsson")
    shots(page, "mapping-encoding-chosen")


def test_rows_without_the_number_autofill_reads_are_named_on_the_batch_page(
    page, live_server, live_sandbox, manager, settings, tmp_path
):
    sync.templates_sync_all()
    template = PassTemplate.objects.get(pk=DEMO_TEMPLATE_ID)
    AutofillSetting.objects.create(template=template, source="phone", field_identifier="phone")
    source = tmp_path / "campaign.csv"
    source.write_text(
        "name,email,phone\nGuðrún Jónsdóttir,gudrun@example.is,699 1234\nBjörk Guðmundsdóttir,bjork@example.is,\n"
        "Þórður Ævarsson,thordur@example.is,\n",
        encoding="utf-8",
    )
    batch = make_links(template, source)
    assert (batch.links, batch.warnings) == (3, 2)
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/links/{batch.pk}/")
    warning = page.locator(".batch-summary tr.summary-warning")
    expect(warning).to_contain_text(
        "no phone number in “Símanúmer / Phone”, which autofill reads to recognise the holder"
    )
    expect(warning.locator("td[data-label='First rows']")).to_have_text("2, 3")
    shots(page, "batch-no-autofill-value")
