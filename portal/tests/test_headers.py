"""Headers on every page: a Content-Security-Policy that allows no inline script or style, and staff pages
(members, exports, downloads) that no browser or proxy stores."""

import re

import pytest
from django.template.loaders.app_directories import get_app_template_dirs
from django.urls import reverse
from playwright.sync_api import expect

from conftest import ARTIFACTS, ROOT, login
from links.keyring import link_keys
from links.tokens import LinkPayload, encode
from members.models import Member
from members.tests.factories import make_member, mirror_template

pytestmark = pytest.mark.django_db
INLINE = re.compile(r"""<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle\s*=|\son[a-z]+\s*=|javascript:""", re.IGNORECASE)


def _csp(response) -> dict[str, str]:
    return dict(directive.strip().split(" ", 1) for directive in response["Content-Security-Policy"].split(";"))


def test_no_template_of_the_portal_has_inline_script_or_style():
    folders = [folder for folder in get_app_template_dirs("templates") if folder.parent.parent == ROOT]
    templates = [path for folder in folders for path in folder.rglob("*.html")]
    assert len(templates) > 20
    offenders = {str(path.relative_to(ROOT)): INLINE.findall(path.read_text()) for path in templates}
    assert {path: found for path, found in offenders.items() if found} == {}


def test_every_kind_of_page_carries_the_policy(client, manager, sandbox):
    template = mirror_template()
    member = make_member(template)
    anonymous = [reverse("login"), "/admin/login/", "/p/not-a-token", "/no-such-page/"]
    staff = [reverse("dashboard"), reverse("members:member_detail", args=[member.pk]), "/admin/"]
    responses = [client.get(url) for url in anonymous]
    client.force_login(manager)
    responses += [client.get(url) for url in staff]
    for response in responses:
        policy = _csp(response)
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", response.request["PATH_INFO"]
        assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
        assert "unsafe" not in response["Content-Security-Policy"]


def test_member_pages_exports_and_link_downloads_are_not_stored(client, manager, sandbox):
    template = mirror_template()
    member = make_member(template, email="anna@example.is")
    client.force_login(manager)
    for url in (
        reverse("members:member_list"),
        reverse("members:member_detail", args=[member.pk]),
        reverse("members:member_export"),
        reverse("dashboard"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert {"no-store", "private"} <= set(re.split(r",\s*", response["Cache-Control"])), url
    export = client.get(reverse("members:member_export"))
    assert b"anna@example.is" in b"".join(export.streaming_content)


def test_the_claim_page_keeps_its_own_caching_for_a_logged_in_visitor(client, manager, sandbox):
    # The claim form must post the same nonce again from the back button, so it is private but storable.
    template = mirror_template()
    token = encode(
        LinkPayload(template_id=template.pk, fields={"name": "Anna", "email": "anna@example.is"}), link_keys()
    )
    client.force_login(manager)
    response = client.get(f"/p/{token}")
    assert response.status_code == 200
    assert response["Cache-Control"] == "private"


@pytest.mark.browser
def test_pages_work_in_chromium_under_the_policy(page, live_server, manager, sandbox):
    """The scripts the pages need are files of our origin: the void confirmation still asks, and Chromium
    reports no blocked script or style on the pages with scripts and former inline styles."""
    template = mirror_template()
    member = make_member(template, upstream={"id": "upstream reply", "status": "ISSUED"})
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    login(page, live_server, "maria")
    page.goto(f"{live_server.url}{reverse('members:member_detail', args=[member.pk])}")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Void").click()
    expect(page.get_by_role("button", name="Void")).to_be_visible()
    assert questions == ["Void this pass on SmartPages? The holder can no longer use it."]
    member.refresh_from_db()
    assert member.status == Member.Status.ISSUED  # dismissed: nothing voided
    # The former inline styles now come from the stylesheet.
    expect(page.locator("pre.upstream-reply")).to_have_css("white-space", "pre-wrap")
    _screenshots(page, "member-detail")
    page.goto(f"{live_server.url}{reverse('members:autofill_settings', args=[template.pk])}")
    expect(page.locator("fieldset.choices")).to_have_css("border-top-width", "0px")
    expect(page.locator("fieldset.choices label").first).to_have_css("font-weight", "400")
    _screenshots(page, "autofill")
    assert violations == []


def _screenshots(page, name: str) -> None:
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
