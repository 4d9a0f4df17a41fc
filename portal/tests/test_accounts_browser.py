"""Staff accounts in Chromium: setting up the second factor from the page's text secret, logging in with a
computed code, wrong codes locking out, and the sign-in events an admin reads afterwards."""

import re
import time
from base64 import b32decode
from pathlib import Path

import pytest
from django.core.cache import cache
from django_otp.oath import TOTP
from playwright.sync_api import expect

from conftest import second_factor_code, second_factor_device

pytestmark = [pytest.mark.browser]
SHOTS = Path("/tmp/accounts-shots")
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def mfa_required(settings):
    settings.MFA_REQUIRED = True
    settings.AXES_FAILURE_LIMIT = 3
    settings.CLIENT_IP_HEADER = "X-Real-IP"
    cache.clear()
    SHOTS.mkdir(exist_ok=True)
    yield
    cache.clear()


def _shoot(page, name: str) -> None:
    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def _password_step(page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()


def _wait_for_a_fresh_code_step() -> None:
    """A TOTP code is accepted once: the second login waits for the app's next 30-second code."""
    time.sleep(30 - time.time() % 30 + 0.5)


def test_a_manager_sets_up_the_app_from_the_text_secret_and_logs_in_with_a_code(page, live_server, manager):
    manager.is_staff = True  # as create_staff makes managers: the admin is open to them
    manager.save(update_fields=["is_staff"])
    base = live_server.url
    _password_step(page, base, "maria")
    expect(page).to_have_url(re.compile(r"/login/set-up-second-factor/\?next=/$"))
    expect(page.locator("figure.qr svg")).to_be_visible()
    _shoot(page, "enrol")
    # Typed by hand from the text, as someone whose camera cannot scan the code would.
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    page.fill("input[name=code]", f"{TOTP(b32decode(secret)).token():06d}")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#recovery-codes li")).to_have_count(10)
    _shoot(page, "recovery-codes")
    page.get_by_role("link", name="I have saved them — continue").click()
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.goto(f"{base}/admin/")
    expect(page.locator("body")).to_contain_text("Site administration")
    page.get_by_role("button", name="Log out").first.click()

    # The next login: the password alone opens neither the portal nor the admin.
    _password_step(page, base, "maria")
    expect(page).to_have_url(re.compile(r"/login/second-factor/\?next=/$"))
    for path in ("/admin/", "/admin/templates_sync/syncrun/", "/members/"):
        page.goto(base + path)
        expect(page).to_have_url(re.compile(r"/login/second-factor/\?next="))
        expect(page.locator("h1")).to_have_text("Enter your code")
    _shoot(page, "second-factor")
    _wait_for_a_fresh_code_step()
    page.fill("input[name=code]", f"{TOTP(b32decode(secret)).token():06d}")
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/members/")
    expect(page.locator("h1")).to_have_text("Members")


def test_wrong_codes_lock_out_and_an_admin_sees_every_attempt_with_name_and_address(
    browser, page, live_server, manager, make_user
):
    base = live_server.url
    second_factor_device("maria")
    attacker = browser.new_context(extra_http_headers={"X-Real-IP": "198.51.100.77"})
    bad = attacker.new_page()
    bad.goto(f"{base}/login/")
    bad.fill("input[name=username]", "nobody-here")
    bad.fill("input[name=password]", "guess")
    bad.get_by_role("button", name="Log in").click()
    expect(bad.locator(".form-errors")).to_contain_text("correct username and password")
    _password_step(bad, base, "maria")
    expect(bad).to_have_url(re.compile(r"/login/second-factor/"))
    bad.fill("input[name=code]", "123456")
    bad.get_by_role("button", name="Verify").click()
    expect(bad.locator(".error")).to_contain_text("That code is not right")
    bad.fill("input[name=code]", "654321")
    bad.get_by_role("button", name="Verify").click()
    expect(bad.locator(".form-errors")).to_contain_text("Too many login attempts")
    bad.goto(f"{base}/")
    expect(bad).to_have_url(re.compile(r"/login/\?next=/$"))  # the half-done login is gone
    attacker.close()

    admin = make_user("ada", "admin")
    device = second_factor_device("ada")
    page.set_extra_http_headers({"X-Real-IP": "203.0.113.5"})
    _password_step(page, base, "ada")
    page.fill("input[name=code]", second_factor_code(device))
    page.get_by_role("button", name="Verify").click()
    page.click("nav >> text=Audit")
    expect(page.locator("h1")).to_have_text("Staff actions")
    _shoot(page, "staff-actions")
    page.get_by_role("link", name="Sign-in events").click()
    table = page.locator("#auth-events")
    expect(table.locator("tr.event-login_failed")).to_have_count(1)
    expect(table.locator("tr.event-second_factor_failed")).to_have_count(2)
    failed = table.locator("tr.event-login_failed")
    expect(failed).to_contain_text("(unknown)")
    expect(failed).to_contain_text("198.51.100.77")
    expect(table.locator("tr.event-second_factor_failed").first).to_contain_text("maria")
    expect(table.locator("tr.event-locked_out")).to_contain_text("198.51.100.77")
    expect(table).not_to_contain_text("nobody-here")
    _shoot(page, "sign-in-events")
    page.select_option("select[name=kind]", "second_factor_failed")
    page.get_by_role("button", name="Filter").click()
    expect(table.locator("tbody tr")).to_have_count(2)
    assert admin.pk


def test_an_admin_disables_a_manager_whose_open_session_is_refused_at_its_next_click(
    browser, page, live_server, manager, make_user
):
    base = live_server.url
    marias = browser.new_context().new_page()
    maria_device = second_factor_device("maria")
    _password_step(marias, base, "maria")
    marias.fill("input[name=code]", second_factor_code(maria_device))
    marias.get_by_role("button", name="Verify").click()
    expect(marias.locator("h1")).to_have_text("Dashboard")

    ada = make_user("ada", "admin")
    ada.is_staff = True
    ada.save(update_fields=["is_staff"])
    device = second_factor_device("ada")
    # Through the admin's door: the same login, the same second factor, then the admin.
    page.goto(f"{base}/admin/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/admin/$"))
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/second-factor/\?next=/admin/$"))
    page.fill("input[name=code]", second_factor_code(device))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(f"{base}/admin/")
    expect(page.locator("body")).to_contain_text("Site administration")
    page.goto(f"{base}/")
    page.click("nav >> text=Staff")
    expect(page.locator("h1")).to_have_text("Staff")
    _shoot(page, "staff")
    row = page.locator("tr[data-user=maria]")
    expect(row).to_contain_text("set up")
    row.get_by_role("button", name="Disable").click()
    expect(page.locator(".messages")).to_contain_text("maria is disabled; their open sessions have ended.")
    expect(page.locator("tr[data-user=maria]")).to_contain_text("disabled")
    # Herself: no role menu and no Disable button for her own row.
    expect(page.locator("tr[data-user=ada] button")).to_have_count(0)

    marias.click("nav >> text=Members")
    expect(marias).to_have_url(re.compile(r"/login/\?next=/members/$"))
    expect(marias.locator(".messages")).to_contain_text("Your session has ended")
    marias.context.close()

    page.get_by_role("link", name="Invite someone").click()
    _shoot(page, "staff-invite")
