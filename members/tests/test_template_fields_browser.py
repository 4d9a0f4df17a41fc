"""The pages issue 22 changed, in Chromium at 1280 and 390 px (no sideways scrolling; saved when SHOTS_DIR is
set): a member edit refused because the template locks its input fields, and a template page whose status
SmartPages gives as DRAFT and whose allowed email domains come as strings, nulls and objects."""

import pytest
from playwright.sync_api import expect

from conftest import login
from members.services import issuing
from sandbox import DEMO_TEMPLATE_ID

from .factories import mirror_template
from .test_browser_daily import look

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_locked_template_refuses_an_edit_on_the_page(page, live_server, sandbox, manager):
    sandbox.update_template(DEMO_TEMPLATE_ID, lockInputFields=True)
    club = mirror_template()
    member = issuing.member_issue(
        template=club,
        values={"name": "Guðrún Jónsdóttir", "email": "gudrun@example.is"},
        external_id=None,
        source="link",
    ).member
    login(page, live_server, manager.username)
    page.goto(f"{live_server.url}/members/{member.pk}/edit/")
    expect(page.get_by_text("the values below cannot be changed")).to_be_visible()  # said before anyone types
    page.fill("input[name=field_name]", "Guðrún Þóra Jónsdóttir")
    page.get_by_role("button", name="Save on SmartPages").click()
    expect(page.get_by_text("so the values cannot be changed; nothing was changed")).to_be_visible()
    look(page, "member-edit-locked")


def test_a_template_with_an_unknown_status_and_odd_domains_shows_both(page, live_server, sandbox, manager):
    sandbox.update_template(
        DEMO_TEMPLATE_ID,
        status="DRAFT",
        useEmailDomainVerification=True,
        allowedEmailDomains=["c.is", None, {"sortOrder": 3, "emailDomain": "hi.is"}, {"emailDomain": None}],
    )
    club = mirror_template()
    login(page, live_server, manager.username)
    page.goto(f"{live_server.url}/templates/{club.pk}/")
    expect(page.get_by_text("only ACTIVE templates issue passes")).to_be_visible()
    expect(page.locator(".badge", has_text="DRAFT")).to_be_visible()
    expect(page.get_by_text("hi.is")).to_be_visible()
    look(page, "template-draft-odd-domains")
