"""The strict choice on the mapping page, in Chromium: a manager ticks it, and the row with a bad optional phone
gets no link (without it, that row would get its link without the phone)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import login, wait_for
from links import services
from links.models import LinkBatch
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_manager_ticks_strict_and_the_row_with_a_bad_optional_phone_gets_no_link(
    page, live_server, live_sandbox, manager, settings, tmp_path
):
    sync.templates_sync_all()
    campaign = tmp_path / "vor.csv"
    campaign.write_text("Nafn,Netfang,Símanúmer\nAnna,anna@example.is,600 5729\nBjörn,bjorn@example.is,820 0001\n")
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/templates/{DEMO_TEMPLATE_ID}/")
    page.get_by_role("link", name="Generate links").click()
    page.set_input_files("input[type=file]", str(campaign))
    page.get_by_role("button", name="Upload and preview").click()

    strict = page.get_by_label("Strict: no link for a row with an invalid optional value")
    expect(strict).not_to_be_checked()
    expect(page.get_by_text("Without it, such a row gets its link without that value")).to_be_visible()
    page.get_by_text("Strict: no link for a row with an invalid optional value").click()  # the label ticks it
    expect(strict).to_be_checked()
    page.get_by_role("button", name="Generate links").click()
    expect(page.locator("[data-run-status] .badge")).to_be_attached()

    batch = LinkBatch.objects.get()
    assert batch.strict is True
    # Made here, or by the session's worker when one runs (it shares this process's MEDIA_ROOT).
    services.link_batch_process(batch_id=batch.pk)
    done = wait_for(lambda: LinkBatch.objects.filter(pk=batch.pk, status__in=["succeeded", "failed"]).first())
    assert done.status == "succeeded", (done.status, done.error, done.links, done.errors)
    page.wait_for_load_state("networkidle")  # the page's own status poll may reload it once the batch is done
    page.goto(page.url)
    expect(page.locator("dd.count-links")).to_have_text("1")
    expect(page.locator("dd.count-errors")).to_contain_text("1")
    expect(page.locator("dd.strictness")).to_have_text("refuse the row (strict)")
