"""A manager's day in Chromium (issue 9): find people as they are typed, read the table, copy a pass link, edit
a member, act on several, follow the refresh history, settle an autofill conflict, read template types.

Every page is also looked at 390 px wide: no sideways scrolling on a phone. With SHOTS_DIR set, each page is
saved at 1280 and 390 px for a person to look at."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from conftest import login
from members.models import MemberBulkAction, MemberChange
from members.services import autofill, bulk, issuing

from .factories import mirror_template

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path(os.environ["SHOTS_DIR"]) if os.environ.get("SHOTS_DIR") else None


def look(page, name: str) -> None:
    """At 1280 and 390 px: no horizontal overflow of the page; a screenshot of each when SHOTS_DIR is set."""
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        overflow = _overflow(page)
        assert overflow <= 0, (name, width, overflow)
        if SHOTS:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def _overflow(page) -> int:
    """How far the page is wider than the window. A progress page reloads itself when its work ends (a worker may
    finish it at any moment), so a measure cut short by that reload is taken again on the new page."""
    for _ in range(5):
        try:
            return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        except PlaywrightError as exc:
            if "Execution context was destroyed" not in str(exc):
                raise
            page.wait_for_load_state()
    raise AssertionError("the page kept navigating")


def issue(template, name, email, external_id=None, phone=""):
    return issuing.member_issue(
        template=template, values={"name": name, "email": email, "phone": phone}, external_id=external_id, source="link"
    ).member


def test_a_managers_day_with_members(page, live_server, sandbox, manager):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    club = mirror_template()
    gudrun = issue(
        club, "Guðrún Ýr Jónsdóttir", "gudrun@simnet.is", external_id="EXT-2026-000000017-GUDRUN-JONSDOTTIR-REYKJAVIK"
    )
    thora = issue(club, "Þóra Björk Ægisdóttir", "thora@passkit.example")
    issue(club, "Laura Loopy", "laura.loopy@example.com", external_id="laura.loopy@example.com", phone="+3547710002")
    issue(club, "Percy PassKit", "percy@example.com")
    issue(club, "Percy P. PassKit", "percy@example.com")
    login(page, live_server, "maria")

    # Search as people type.
    page.goto(f"{live_server.url}/members/")
    for typed, found in (
        ("gudrun", "Guðrún"),
        ("thora", "Þóra"),
        ("simnet.is", "Guðrún"),
        (str(thora.pass_id)[:8], "Þóra"),
    ):
        page.fill("input[name=q]", typed)
        with page.expect_navigation():
            page.click("form.filters button[type=submit]")
        expect(page.locator("#member-table tbody tr")).to_have_count(1)
        assert page.locator("#member-table tbody tr").inner_text().strip().startswith(found), typed
    page.goto(f"{live_server.url}/members/")
    # Long identifiers are cut on one line, whole on hover, and sortable headers sort.
    external = page.locator(f"tr[data-member-id='{gudrun.pk}'] .ident code").first
    assert external.get_attribute("title") == gudrun.external_id
    assert external.evaluate("e => e.scrollWidth > e.clientWidth && getComputedStyle(e).whiteSpace === 'nowrap'")
    page.click("th >> text=Name")
    expect(page).to_have_url(re.compile(r"sort=name"))
    assert page.locator("#member-table tbody tr").first.inner_text().strip().startswith("Guðrún")
    # Every column fits a 1280 px window (the table's box scrolls sideways only on narrower ones).
    wrap = page.locator(".table-wrap:has(#member-table)")
    assert wrap.evaluate("e => e.scrollWidth - e.clientWidth") <= 0
    look(page, "member-list")

    # Copy the holder's pass link from the member page.
    page.click("#member-table >> text=Guðrún Ýr Jónsdóttir")
    page.click("#copy-pass-link")
    expect(page.locator("#copy-pass-link")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == gudrun.distribution_url
    # The whole Pass ID and External ID show (wrapped if they must), for staff to compare by eye.
    for ident in ("#pass-id", "#external-id"):
        assert page.locator(ident).evaluate("e => e.scrollWidth <= e.clientWidth")
    look(page, "member-detail")

    # Edit the member: sent upstream, recorded.
    page.click("#edit-member")
    assert page.locator("input[name=external_id]").is_disabled()
    page.fill("input[name=field_name]", "Guðrún Ýr Jónsdóttir Blöndal")
    look(page, "member-edit")
    page.click("text=Save on SmartPages")
    page.wait_for_selector("text=Saved on SmartPages and here.")
    assert "Blöndal" in page.locator("#value-changes").inner_text()
    assert MemberChange.objects.get(member=gudrun).by == manager
    upstream = next(p for p in sandbox.passes() if p["id"] == str(gudrun.pass_id))
    assert {f["identifier"]: f["value"] for f in upstream["inputFields"]}["name"] == "Guðrún Ýr Jónsdóttir Blöndal"

    # Act on several: tick two, refresh them from SmartPages (queued for a worker; the page shows progress).
    page.goto(f"{live_server.url}/members/")
    page.check(f"tr[data-member-id='{gudrun.pk}'] input[name=member]")
    page.check(f"tr[data-member-id='{thora.pk}'] input[name=member]")
    expect(page.locator("[data-selected-count]")).to_have_text("2 ticked")
    page.click("#bulk-refresh")
    # The heading, not the one-time message: with a worker running, the page reloads itself once it is done.
    expect(page.locator("h1")).to_contain_text("Refresh from SmartPages · 2 members")
    look(page, "bulk-detail")
    # Finish it here should no worker have taken it, and wait for the page's own reload: leaving while that
    # reload is pending lets it land after the next page's navigation.
    bulk.member_bulk_run(bulk=MemberBulkAction.objects.latest("pk"))
    expect(page.locator("#bulk-progress[data-finished=false]")).to_have_count(0, timeout=30_000)

    # The refresh history, started by hand.
    page.goto(f"{live_server.url}/members/refresh-runs/")
    page.click("#refresh-now")
    expect(page.locator("#refresh-runs tbody tr [data-field=total]").first).to_have_text("5")
    look(page, "refresh-runs")

    # Preview autofill by email before saving it: nothing of the form, its CSRF token least of all, in the URL.
    page.goto(f"{live_server.url}/members/autofill/{club.pk}/")
    page.check("input[name=source][value=email]")
    with page.expect_navigation():
        page.click("#preview-setting")
    expect(page.locator("#autofill-preview h2")).to_have_text("Preview of the proposed setting")
    assert page.url == f"{live_server.url}/members/autofill/{club.pk}/"
    look(page, "autofill-proposal-preview")

    # Settle Percy's two passes that share an email, from the autofill conflict list.
    autofill.autofill_setting_change(template=club, source="email")
    page.goto(f"{live_server.url}/members/autofill/{club.pk}/?preview=1")
    expect(page.locator("#conflicts .conflict-group")).to_have_count(1)
    look(page, "autofill-conflicts")
    page.locator("#conflicts input[name=keep]").first.check()
    page.click("#conflicts button:has-text('Resolve')")
    page.wait_for_selector("text=keeps External ID “percy@example.com”")
    expect(page.locator("#conflicts")).to_have_count(0)

    # Templates read well: human type labels, short ids, reasons beside "(cannot issue)".
    page.goto(f"{live_server.url}/templates/")
    assert "Membership card" in page.locator("table").inner_text() or "Appointment pass" in page.content()
    assert "APPOINTMENT_PASS" not in page.locator("table").inner_text()
    # The template list, the sync history and the uploads stack their rows on a phone, as the outbox does: no
    # table to scroll sideways, each value under its column's name.
    for path, name in (("/templates/", "template-list"), ("/sync/", "sync-history"), ("/links/", "link-uploads")):
        page.goto(f"{live_server.url}{path}")
        page.set_viewport_size({"width": 390, "height": 900})
        row = page.locator("table.stack-on-phone tbody tr").first
        assert row.evaluate("r => getComputedStyle(r).display") == "block", path
        page.set_viewport_size({"width": 1280, "height": 900})
        look(page, name)
    page.goto(f"{live_server.url}/members/add/")
    options = page.locator("#id_template option").all_inner_texts()
    assert all(re.search(r" · [0-9a-f]{8} — ", option) for option in options), options
    look(page, "member-add-choose")
