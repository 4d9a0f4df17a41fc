"""The second factor (django-otp TOTP + recovery codes) on the real stack: PostgreSQL sessions, Redis-backed
django-axes counting wrong codes with wrong passwords."""

import re
import time
from base64 import b32decode

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import AuthEvent
from links.tests.test_qr import read_qr_svg

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def mfa_required(settings):
    settings.MFA_REQUIRED = True
    settings.AXES_FAILURE_LIMIT = 3
    cache.clear()
    yield
    cache.clear()


def _password_step(client, username="maria", address="203.0.113.7"):
    response = client.post(reverse("login"), {"username": username, "password": PASSWORD}, REMOTE_ADDR=address)
    assert response.status_code == 302, response.content.decode()[:500]
    return response


def _code_from_secret(secret: str) -> str:
    return f"{TOTP(b32decode(secret)).token():06d}"


def _enrol(client) -> tuple[str, list[str]]:
    page = client.get(reverse("second_factor_enrol")).content.decode()
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page)[1]
    done = client.post(reverse("second_factor_enrol"), {"code": _code_from_secret(secret)})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z2-7]+)</code></li>", done.content.decode())
    return secret, codes


def test_a_password_alone_reaches_no_staff_page_and_no_admin_page(client, manager):
    _password_step(client)
    for url in ("/", reverse("members:member_list"), "/admin/", "/admin/templates_sync/syncrun/", "/audit/actions/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("second_factor_enrol") + "?next="), url
    # The set-up page shows the QR code and the same secret as text.
    page = client.get(reverse("second_factor_enrol")).content.decode()
    assert 'id="totp-secret"' in page
    device = TOTPDevice.objects.get(user=manager, confirmed=False)
    # What an authenticator app scans: the device's own otpauth: address.
    assert read_qr_svg(re.search(r'<svg [^>]*class="qr-code".*?</svg>', page, re.S).group(0)) == device.config_url


def test_enrolment_with_a_code_shows_recovery_codes_once_and_opens_the_portal_and_admin(client, manager):
    manager.is_staff = True  # as create_staff makes managers
    manager.save(update_fields=["is_staff"])
    _password_step(client)
    secret, codes = _enrol(client)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/").status_code == 200
    admin_page = client.get("/admin/")
    assert admin_page.status_code == 200 and "Site administration" in admin_page.content.decode()
    assert AuthEvent.objects.filter(user=manager, kind=AuthEvent.Kind.MFA_ENROLLED).exists()

    # The next login asks for a code, not a new set-up; a recovery code works once.
    client.post(reverse("logout"))
    _password_step(client)
    assert client.get("/")["Location"].startswith(reverse("second_factor_verify"))
    assert client.post(reverse("second_factor_verify"), {"code": codes[0], "next": "/members/"})["Location"] == (
        "/members/"
    )
    assert client.get(reverse("members:member_list")).status_code == 200
    assert not StaticToken.objects.filter(token=codes[0]).exists()
    assert AuthEvent.objects.filter(user=manager, kind=AuthEvent.Kind.SECOND_FACTOR, detail="recovery code").exists()
    client.post(reverse("logout"))
    _password_step(client)
    reused = client.post(reverse("second_factor_verify"), {"code": codes[0]})
    assert reused.status_code == 400 and "That code is not right" in reused.content.decode()
    assert client.get("/").status_code == 302


def test_wrong_codes_lock_out_like_wrong_passwords(client, manager):
    _password_step(client)
    _enrol(client)
    client.post(reverse("logout"))
    _password_step(client)
    first = client.post(reverse("second_factor_verify"), {"code": "000000"}, REMOTE_ADDR="203.0.113.7")
    assert first.status_code == 400
    # A wrong password and a wrong code draw on the same budget of three.
    other = client.__class__()
    assert other.post(reverse("login"), {"username": "maria", "password": "wrong"}).status_code == 200
    locked = client.post(reverse("second_factor_verify"), {"code": "111111"}, REMOTE_ADDR="203.0.113.7")
    assert locked.status_code == 429 and "Too many login attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session  # the half-done login is dropped
    # Locked out now even with the right password, from another address.
    refused = other.post(reverse("login"), {"username": "maria", "password": PASSWORD}, REMOTE_ADDR="198.51.100.9")
    assert refused.status_code == 429
    kinds = list(AuthEvent.objects.filter(username="maria").values_list("kind", flat=True))
    assert kinds.count(AuthEvent.Kind.SECOND_FACTOR_FAILED) == 2
    assert AuthEvent.Kind.LOCKED_OUT in kinds


def test_reset_mfa_removes_the_factor_and_ends_the_sessions(client, manager, capsys):
    _password_step(client)
    _enrol(client)
    assert client.get("/").status_code == 200
    time.sleep(0.01)
    call_command("reset_mfa", "maria")
    assert "Removed 2 second-factor devices of maria" in capsys.readouterr().out
    assert client.get("/")["Location"].startswith("/login/")  # the open session was ended
    assert not TOTPDevice.objects.filter(user=manager).exists()
    _password_step(client)
    assert client.get("/")["Location"].startswith(reverse("second_factor_enrol"))  # set up again
    assert AuthEvent.objects.filter(user=manager, kind=AuthEvent.Kind.MFA_RESET, detail="manage.py reset_mfa").exists()


def test_without_mfa_required_only_people_who_set_one_up_are_asked(client, manager, viewer, settings):
    settings.MFA_REQUIRED = False
    _password_step(client, "vigdis")
    assert client.get("/").status_code == 200  # the demo logins of `make run`
    client.post(reverse("logout"))
    settings.MFA_REQUIRED = True
    _password_step(client)
    _enrol(client)
    client.post(reverse("logout"))
    settings.MFA_REQUIRED = False
    _password_step(client)
    assert client.get("/")["Location"].startswith(reverse("second_factor_verify"))


def test_new_recovery_codes_replace_the_old_ones(client, manager):
    _password_step(client)
    _secret, old_codes = _enrol(client)
    page = client.get(reverse("account")).content.decode()
    assert "authenticator app" in page and "New recovery codes" in page
    new = client.post(reverse("recovery_codes_new"))
    new_codes = re.findall(r"<li><code>([a-z2-7]+)</code></li>", new.content.decode())
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    assert set(StaticToken.objects.filter(device__user=manager).values_list("token", flat=True)) == set(new_codes)
    assert AuthEvent.objects.filter(kind=AuthEvent.Kind.MFA_ENROLLED, detail="new recovery codes").exists()
