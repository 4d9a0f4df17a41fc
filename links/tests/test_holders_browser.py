"""Issue 20 in Chromium: Björk's and Guðrún's sequences as a new staff member would run them — claims with
autofill off, autofill switched on mid-campaign, the conflict resolved — ending with one active pass per
holder, each the original Pass ID, and no extra pass upstream. Then the typed-identity offer. Each changed page
is looked at 1280 and 390 px (screenshots into SHOTS_DIR when set)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from conftest import login
from links import claims
from members.models import ExternalIdConflict, Member
from members.services import autofill, passes
from members.tests.test_browser_daily import look
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync

from .claim_factories import add_member_field_template, link_path, mirror
from .test_send_my_pass import smtp  # noqa: F401 - the fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BJORK = {"name": "Björk Guðmundsdóttir", "email": "bjork@example.is", "phone": "858 1235"}
GUDRUN = {"name": "Guðrún Jónsdóttir", "email": "gudrun@example.is", "phone": "699 1234"}
THORA = {"name": "Þóra Hrund Einarsdóttir", "email": "thora@example.is", "phone": "771 2345"}


def claim_in_browser(page, link: str) -> str:
    """Follow the link, press the one button, read the Pass ID printed beneath the QR code."""
    page.goto(link)
    page.click("button[type=submit].primary")
    page.wait_for_selector("figure.qr svg")
    return page.locator("#pass-id").inner_text()


def active_passes(sandbox, template_id: str) -> list[str]:
    return [p["id"] for p in sandbox.passes(template_id) if not p.get("isVoided")]


def test_bjork_and_gudrun_keep_one_pass_each_through_autofill_switched_on_and_a_conflict_resolved(
    browser, page, live_server, live_sandbox, manager, settings
):
    settings.CLAIM_RATE = "100000/m"
    settings.PUBLIC_BASE_URL = live_server.url
    assert sync.templates_sync_all().status == "succeeded"
    club_id = DEMO_TEMPLATE_ID
    upstream_before = len(live_sandbox.passes(club_id))
    bjork_link = live_server.url + link_path(fields=BJORK, batch_id=301, row=1)
    gudrun_link = live_server.url + link_path(fields=GUDRUN, batch_id=301, row=2)

    # Autofill off, as a campaign starts: Björk claims once, Guðrún twice (two passes, as the seed shows).
    holder = browser.new_context(viewport={"width": 390, "height": 900})
    phone = holder.new_page()
    bjork_pass = claim_in_browser(phone, bjork_link)
    gudrun_first = claim_in_browser(phone, gudrun_link)
    gudrun_second = claim_in_browser(phone, gudrun_link)
    assert len({bjork_pass, gudrun_first, gudrun_second}) == 3
    gudrun_second_member = Member.objects.get(pass_id=gudrun_second)
    second_pass_page = live_server.url + reverse(
        "holder:pass", kwargs={"key": claims.pass_page_key(member=gudrun_second_member)}
    )
    upstream_at_switch = len(live_sandbox.passes(club_id))
    assert upstream_at_switch == upstream_before + 3

    # Mid-campaign a manager turns autofill on (phone). The same step says what it means for the members there.
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}/members/autofill/{club_id}/")
    page.check("input[name=source][value=phone]")
    page.click("text=Save setting")
    confirm = page.locator("#autofill-confirm")
    expect(confirm).to_contain_text("1 would get an External ID.")
    expect(confirm).to_contain_text("2 in 1 conflict")
    look(page, "autofill-save-step")
    page.click("#save-only")  # the new staff member skips the fill: the claims must still find the holders
    page.wait_for_selector("text=Autofill setting saved.")

    # Björk's next click: her original pass, not a second one.
    assert claim_in_browser(phone, bjork_link) == bjork_pass
    expect(phone.locator("#already-enrolled")).to_be_visible()
    # Guðrún's next click: her first (earliest) pass, not a third; the conflict is flagged for staff.
    assert claim_in_browser(phone, gudrun_link) == gudrun_first
    assert len(live_sandbox.passes(club_id)) == upstream_at_switch

    # The dashboard and the template page show the open conflict; the table names both of Guðrún's passes.
    page.goto(f"{live_server.url}/")
    look(page, "dashboard-conflicts")
    page.goto(f"{live_server.url}/templates/{club_id}/")
    expect(page.locator("#template-open-conflicts")).to_have_text("1 to resolve")
    look(page, "template-conflicts")
    page.click("#template-open-conflicts")
    group = page.locator("#conflicts .conflict-group")
    expect(group).to_have_count(1)
    expect(group.locator("tr.suggested")).to_contain_text(gudrun_first)
    expect(group).to_contain_text(gudrun_second)
    expect(group).to_contain_text("#301")
    look(page, "conflict-table")

    # Resolve, voiding the other pass: a confirmation names it first.
    group.locator("input[name=void]").check()
    group.locator("button:has-text('Resolve')").click()
    expect(page.locator("#void-list")).to_contain_text(gudrun_second)
    expect(page.locator("h1")).to_have_text("Void 1 pass?")
    look(page, "void-confirmation")
    page.click("#confirm-void")
    page.wait_for_selector("text=keeps External ID “+3546991234”")
    assert not ExternalIdConflict.objects.filter(resolved_at__isnull=True).exists()
    expect(page.locator("#conflicts")).to_have_count(0)

    # Guðrún's voided pass (it may be the one in her wallet) leads her to the valid one.
    phone.goto(second_pass_page)
    expect(phone.locator(".pass-voided")).to_contain_text("cancelled by the issuer")
    look(phone, "voided-pass-page")
    phone.click("#replacement-link")
    expect(phone.locator("#pass-id")).to_have_text(gudrun_first)

    # One active pass per holder, each the original Pass ID, and no pass upstream beyond the three first clicks.
    active = Member.objects.filter(template_id=club_id, status=Member.Status.ISSUED)
    assert sorted(str(m.pass_id) for m in active if m.display_name == BJORK["name"]) == [bjork_pass]
    assert sorted(str(m.pass_id) for m in active if m.display_name == GUDRUN["name"]) == [gudrun_first]
    assert len(live_sandbox.passes(club_id)) - upstream_at_switch == 0
    assert set(active_passes(live_sandbox, club_id)) >= {bjork_pass, gudrun_first}
    assert gudrun_second not in active_passes(live_sandbox, club_id)
    holder.close()


def test_a_holder_who_typed_her_address_gets_her_pass_sent_not_shown(
    browser,
    page,
    live_server,
    sandbox,  # a sandbox of its own: the template added below must not outlive the test in the session's
    settings,
    smtp,  # noqa: F811 - the fixture
):
    settings.CLAIM_RATE = "100000/m"
    settings.PUBLIC_BASE_URL = live_server.url
    school = mirror(add_member_field_template(sandbox))
    autofill.autofill_setting_change(template=school, source="email")
    link = live_server.url + link_path(school.pk, {"name": "Jóna Jónsdóttir"})

    def typed_claim(browser_page):
        browser_page.goto(link)
        browser_page.fill("input[name=field_0]", "010130-2989")
        browser_page.fill("input[name=field_1]", "jona@skoli.is")
        browser_page.click("button[type=submit].primary")

    page.goto(link)
    expect(page.locator("#id_field_1_hint")).to_have_text("Use an email address at skoli.is.")  # before any try
    look(page, "claim-form-hints")
    typed_claim(page)
    page.wait_for_selector("figure.qr svg")
    pass_id = page.locator("#pass-id").inner_text()

    other = browser.new_context(viewport={"width": 390, "height": 900}, locale="is-IS")
    someone = other.new_page()
    typed_claim(someone)
    offer = someone.locator("#send-email")
    expect(offer).to_have_text("Senda kortið mitt á j•••@skoli.is")
    # The lead does not send her to the issuer while a button below sends her pass.
    expect(someone.locator("#enrolled-pass-hidden > p").first).to_have_text(
        "Þú hefur þegar fengið þetta kort. Opnaðu það í veskinu í símanum þínum."
    )
    assert pass_id not in someone.content()
    look(someone, "send-offer")
    offer.click()
    expect(someone.locator("#pass-sent")).to_contain_text("Við sendum tengil á kortið þitt á j•••@skoli.is.")
    assert pass_id not in someone.content()
    look(someone, "pass-sent")
    other.close()
    [(recipients, message)] = smtp.messages
    assert recipients == ["jona@skoli.is"] and "/pass/" in message.get_body().get_content()


def test_a_holder_whose_pass_was_voided_sees_it_cancelled_and_how_to_reach_the_issuer(
    browser, live_server, live_sandbox, manager, settings
):
    settings.CLAIM_RATE = "100000/m"
    assert sync.templates_sync_all().status == "succeeded"
    club = mirror()
    autofill.autofill_setting_change(
        template=club, source="email", contact_help="Hringdu í síma 555 1234 (virka daga 9–16)."
    )
    upstream_before = len(live_sandbox.passes(str(club.pk)))
    link = live_server.url + link_path(fields=GUDRUN, batch_id=302, row=1)
    holder = browser.new_context(viewport={"width": 390, "height": 844}, locale="is-IS")
    phone = holder.new_page()
    pass_id = claim_in_browser(phone, link)
    passes.member_void(member=Member.objects.get(pass_id=pass_id), user=manager)

    phone.goto(link)  # her link again, weeks later
    phone.click("button[type=submit].primary")
    notice = phone.locator(".pass-voided .notice")
    expect(notice).to_contain_text("Útgefandinn hefur ógilt þetta kort.")
    expect(phone.locator("#contact-help")).to_have_text("Hringdu í síma 555 1234 (virka daga 9–16).")
    expect(phone.locator("#already-enrolled")).to_have_count(0)
    expect(phone.locator("figure.qr")).to_have_count(0)
    look(phone, "voided-pass-contact")
    assert Member.objects.count() == 1 and len(live_sandbox.passes(str(club.pk))) == upstream_before + 1
    holder.close()


def test_a_holder_whose_pass_was_redeemed_sees_it_with_its_pass_id_and_gets_no_second(
    browser, live_server, live_sandbox, settings
):
    """Þóra's coupon, used at the till (SmartPages says REDEEMED; a refresh reads it back): her link again shows that pass,
    marked redeemed, with its QR code and Pass ID — not "we could not create your pass", and no second coupon."""
    settings.CLAIM_RATE = "100000/m"
    assert sync.templates_sync_all().status == "succeeded"
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    upstream_before = len(live_sandbox.passes(str(club.pk)))
    # A holder of her own: the sandbox outlives each test, and Guðrún's External ID is taken there by the tests above.
    link = live_server.url + link_path(fields=THORA, batch_id=303, row=1)
    holder = browser.new_context(viewport={"width": 390, "height": 844}, locale="is-IS")
    phone = holder.new_page()
    pass_id = claim_in_browser(phone, link)
    live_sandbox.change_pass(pass_id, status="REDEEMED")
    passes.member_refresh(member=Member.objects.get(pass_id=pass_id))

    phone.goto(link)
    phone.click("button[type=submit].primary")
    expect(phone.locator("#redeemed")).to_contain_text("Þetta kort hefur verið innleyst.")
    expect(phone.locator("#already-enrolled")).to_be_visible()
    expect(phone.locator("figure.qr svg")).to_be_visible()
    expect(phone.locator("#pass-id")).to_have_text(pass_id)
    look(phone, "redeemed-pass-page")
    assert Member.objects.count() == 1 and len(live_sandbox.passes(str(club.pk))) == upstream_before + 1
    holder.close()
