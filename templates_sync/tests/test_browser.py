"""What staff see in Chromium: syncing templates, opening one, and what a viewer may not do."""

import re

import pytest
from playwright.sync_api import expect

from conftest import login
from templates_sync.models import PassTemplate

pytestmark = [pytest.mark.browser, pytest.mark.worker]


def test_a_manager_syncs_and_sees_the_templates_appear_then_opens_one(
    page, live_server, celery_worker_process, live_sandbox, manager
):
    login(page, live_server, "maria")
    page.click("nav >> text=Templates")
    expect(page.locator("td.empty")).to_contain_text("No templates yet")

    page.click("button:has-text('Sync now')")

    # The page follows the run by itself and reloads when the worker is done.
    expect(page.locator("table.data tbody tr")).to_have_count(len(live_sandbox.template_ids()), timeout=30_000)
    expect(page.locator("td.empty")).to_have_count(0)
    demo = PassTemplate.objects.get(pk="5a3d0c1e-7b2f-4e8a-9c61-2f0b6d4e8a10")
    page.click(f"a:has-text('{demo.name}')")
    expect(page).to_have_url(re.compile(rf"/templates/{demo.pk}/$"))
    expect(page.locator("h1")).to_have_text(demo.name)
    expect(page.locator("table.data")).to_contain_text("email")
    expect(page.get_by_role("button", name="Refresh")).to_be_visible()


def test_a_viewer_sees_no_manager_buttons(page, live_server, live_sandbox, viewer):
    from templates_sync import sync

    sync.templates_sync_all()
    login(page, live_server, "vigdis")
    page.click("nav >> text=Templates")
    expect(page.locator("table.data tbody tr")).to_have_count(len(live_sandbox.template_ids()))
    expect(page.get_by_role("button", name="Sync now")).to_have_count(0)
    page.locator("table.data tbody a").first.click()
    expect(page.get_by_role("button", name="Refresh")).to_have_count(0)

    # A forged POST with a valid CSRF token is still refused by the permission check.
    status = page.evaluate(
        """async () => {
            const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
            const r = await fetch('/sync/now/', {method: 'POST', headers: {'X-CSRFToken': token}});
            return r.status;
        }"""
    )
    assert status == 403
