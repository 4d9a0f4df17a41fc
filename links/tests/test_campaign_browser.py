"""A single-use campaign in Chromium with a real worker: the template's sample CSV uploaded with "one pass per
row", its links downloaded (and the download recorded), one row claimed twice (one pass), new columns and a
second run, then the upload deleted after its confirmation page."""

import csv

import pytest
from playwright.sync_api import expect

from conftest import login
from links.models import LinkBatch, LinkBatchEvent
from members.models import Member
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_a_manager_runs_a_single_use_campaign_from_the_sample_csv_to_its_deletion(
    page, browser, live_server, celery_worker_process, live_sandbox, manager, settings
):
    settings.CLAIM_RATE = "100000/m"
    sync.templates_sync_all()
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/links/template/{DEMO_TEMPLATE_ID}/upload/")
    with page.expect_download() as sample:
        page.locator("#sample-csv").click()
    page.set_input_files("input[type=file]", sample.value.path())
    page.get_by_label("One pass per row").check()
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.get_by_text("3 rows read")).to_be_visible()
    page.get_by_role("button", name="Generate links").click()
    expect(page.get_by_role("link", name="Download links")).to_be_visible(timeout=60_000)
    expect(page.locator("#single-use")).to_contain_text("yes")
    expect(page.locator("dd.count-errors")).to_have_text("0")
    with page.expect_download() as result:
        page.get_by_role("link", name="Download links").click()
    with open(result.value.path(), encoding="utf-8-sig", newline="") as output:
        rows = list(csv.DictReader(output))
    assert [row["name"] for row in rows] == ["Guðrún Jónsdóttir", "Sigurður Einarsson", "Þórdís Ólafsdóttir"]

    # Guðrún's link, claimed from two browsers: the first claim issues, the second shows the same pass.
    path = "/p/" + rows[0]["smartpass_link"].rsplit("/p/", 1)[1]
    pass_ids = []
    for _ in range(2):
        holder = browser.new_context()
        holder_page = holder.new_page()
        holder_page.goto(live_server.url + path)
        holder_page.click("button[type=submit].primary")
        holder_page.wait_for_selector("figure.qr svg")
        pass_ids.append(holder_page.locator("#pass-id").inner_text())
        enrolled_note = holder_page.locator("#already-enrolled").count()
        holder.close()
    assert pass_ids[0] == pass_ids[1] and enrolled_note == 1
    assert Member.objects.get().display_name == "Guðrún Jónsdóttir"
    assert live_sandbox.request_count("POST", "/api/v1/pass") >= 1 and len(live_sandbox.passes(DEMO_TEMPLATE_ID)) >= 1

    page.reload()
    expect(page.locator("#claims-count")).to_have_text("2")
    expect(page.locator("#claim-members-created")).to_have_text("1")
    expect(page.locator("#claim-duplicates-prevented")).to_have_text("1")
    expect(page.locator("#batch-events")).to_contain_text("downloaded the links file")

    # New columns: the phone number left out of the links; the worker makes them again.
    page.locator("#change-columns").click()
    page.get_by_label("phone", exact=True).select_option("")
    page.get_by_role("button", name="Make the links again").click()
    expect(page.locator("[data-run-status] .badge")).to_have_text("succeeded", timeout=60_000)
    batch = LinkBatch.objects.get()
    assert batch.mapping == {"name": "name", "email": "email"} and batch.links == 3
    expect(page.locator("#batch-events")).to_contain_text("changed the columns and ran again")

    page.locator("#delete-upload").click()
    expect(page.locator("h1")).to_have_text("Delete this upload?")
    page.locator("#confirm-delete").click()
    expect(page.locator("#deleted-uploads")).to_contain_text(batch.original_name)
    assert not LinkBatch.objects.exists()
    assert LinkBatchEvent.objects.filter(action="deleted", batch_id=batch.pk, by_name="maria").exists()
