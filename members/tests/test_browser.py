"""A manager in Chromium: search members, open one, change autofill, export what the list shows."""

import csv
import io
import re

import pytest
from playwright.sync_api import expect

from conftest import login
from members.models import Member

from .factories import make_member, mirror_template

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_manager_searches_opens_a_member_changes_autofill_and_exports_the_list(page, live_server, sandbox, manager):
    club = mirror_template()
    laura = make_member(club, name="Laura Loopy", email="laura.loopy@example.com", phone="+3545551234")
    make_member(club, name="Percy PassKit", email="percy@example.com", phone="+3546612345")
    make_member(club, name="Jón Þórsson", email="jon@example.is", status=Member.Status.FAILED)
    login(page, live_server, "maria")

    # Search by email typed with capitals and spaces, then by phone written the Icelandic way with 00.
    page.click("nav >> text=Members")
    page.fill("input[name=q]", "  Laura.Loopy@EXAMPLE.com ")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"q=\+*Laura"))  # the filtered page has loaded, not the old one
    expect(page.locator("#member-table tbody tr")).to_have_count(1)
    assert page.locator("#member-table tbody tr").all_inner_texts()[0].strip().startswith("Laura Loopy")
    page.fill("input[name=q]", "00354 555 12 34")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"q=00354"))
    expect(page.locator("#member-table tbody tr")).to_have_count(1)

    # Open the detail page.
    page.click("#member-table >> text=Laura Loopy")
    assert page.locator("#pass-id").inner_text() == str(laura.pass_id)
    assert page.locator("h1").inner_text().startswith("Laura Loopy")

    # Change the autofill setting from the template's page and see the audit line.
    page.click(f"dd >> a[href='/templates/{club.pk}/']")
    page.click("#members-panel >> text=Autofill settings")
    page.check("input[name=source][value=phone]")
    page.click("text=Save setting")
    # Members without an External ID are here: the same step says what the setting means for them.
    expect(page.locator("#autofill-confirm")).to_be_visible()
    page.click("#save-only")
    page.wait_for_selector("text=Autofill setting saved.")
    assert page.locator("#autofill-source").inner_text() == "Phone number"
    audit = page.locator("#autofill-audit tbody tr").first.inner_text()
    assert "maria" in audit and "Off" in audit and "Phone number (phone)" in audit

    # Export the filtered list: the file holds the same rows as the page.
    page.click("text=Members of this template")
    page.select_option("select[name=status]", "issued")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"status=issued"))
    expect(page.locator("#member-table tbody tr")).to_have_count(2)
    shown = page.locator("#member-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.passId)")
    assert len(shown) == 2
    with page.expect_download() as download_info:
        page.click("#export-csv")
    content = open(download_info.value.path(), "rb").read()
    assert content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"))))
    assert [row["Pass ID"] for row in rows] == shown
    assert {row["Name"] for row in rows} == {"Laura Loopy", "Percy PassKit"}
