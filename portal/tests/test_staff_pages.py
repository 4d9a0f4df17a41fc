"""The admin role's staff pages: invitations by email through a real SMTP server (aiosmtpd), role changes,
disabling, second-factor resets, and the rules about oneself and the last admin."""

import datetime
import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from audit.models import StaffAction
from conftest import second_factor_device
from portal.services import StaffChangeRefused, staff_role_change

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "lava fields under snow"


@pytest.fixture
def smtp(smtp_server, settings):
    """The suite's SMTP server (aiosmtpd in a process of its own: conftest.smtp_server)."""
    settings.DEFAULT_FROM_EMAIL = "portal@example.is"
    settings.PUBLIC_BASE_URL = "http://testserver"
    return smtp_server


@pytest.fixture
def ada(make_user):
    return make_user("ada", "admin")


def _logged_in_client(client_class, username):
    client = client_class()
    assert client.post(reverse("login"), {"username": username, "password": "correct horse battery"}).status_code == 302
    return client


def test_an_admin_invites_someone_who_sets_a_password_once_and_logs_in(client, ada, smtp):
    client.force_login(ada)
    response = client.post(
        reverse("staff_invite"), {"username": "gunnar", "email": "Gunnar@Example.is", "role": "manager"}
    )
    assert response.status_code == 302
    [(recipients, message)] = smtp.messages
    assert recipients == ["Gunnar@example.is"] and message["From"] == "portal@example.is"
    body = message.get_payload()
    assert "ada invited you to SmartPass Portal as manager (user name: gunnar)" in body
    link = re.search(r"http://testserver(/staff/set-password/\S+/)", body)[1]
    gunnar = get_user_model().objects.get(username="gunnar")
    assert not gunnar.has_usable_password() and gunnar.groups.get().name == "manager"
    invited = StaffAction.objects.get(action="staff.invited")
    assert (invited.actor_name, invited.object_repr, invited.after["role"]) == ("ada", "gunnar", "manager")
    assert link.split("/")[-2] not in str(list(StaffAction.objects.values()))  # the token is never recorded

    anonymous = client.__class__()
    form_page = anonymous.get(link, follow=True)
    assert "Choose your password" in form_page.content.decode()
    short = anonymous.post(form_page.redirect_chain[-1][0], {"new_password1": "short1", "new_password2": "short1"})
    assert "at least 12 characters" in short.content.decode()
    done = anonymous.post(
        form_page.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert done.status_code == 302 and done["Location"] == reverse("login")
    again = client.__class__().get(link, follow=True)
    assert "This link no longer works" in again.content.decode()  # once only
    login = client.__class__().post(reverse("login"), {"username": "gunnar", "password": NEW_PASSWORD})
    assert login.status_code == 302


def test_an_invitation_link_expires(client, ada, smtp, settings, monkeypatch):
    client.force_login(ada)
    client.post(reverse("staff_invite"), {"username": "gunnar", "email": "g@example.is", "role": "viewer"})
    link = re.search(r"http://testserver(/staff/set-password/\S+/)", smtp.messages[0][1].get_payload())[1]
    # The token generator's clock (its `_now` is there for tests), moved past PASSWORD_RESET_TIMEOUT.
    expired = datetime.datetime.now() + datetime.timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 1)
    monkeypatch.setattr(type(default_token_generator), "_now", lambda self: expired)
    assert "This link no longer works" in client.__class__().get(link, follow=True).content.decode()


def test_changing_a_role_or_disabling_ends_the_persons_sessions_and_is_recorded(client, ada, manager):
    marias = _logged_in_client(client.__class__, "maria")
    client.force_login(ada)
    time.sleep(0.01)
    client.post(reverse("staff_role", args=[manager.pk]), {"role": "viewer"})
    assert marias.get("/")["Location"].startswith("/login/")
    change = StaffAction.objects.get(action="staff.role_changed")
    assert (change.before["role"], change.after["role"], change.actor_name) == ("manager", "viewer", "ada")

    marias = _logged_in_client(client.__class__, "maria")
    page = client.get(reverse("staff_list")).content.decode()
    assert 'data-user="maria"' in page
    client.post(reverse("staff_active", args=[manager.pk]), {"active": "0"})
    assert marias.get("/")["Location"].startswith("/login/")  # refused at its next request
    assert (
        client.__class__()
        .post(reverse("login"), {"username": "maria", "password": "correct horse battery"})
        .status_code
        == 200
    )
    disabled = StaffAction.objects.get(action="staff.disabled")
    assert (disabled.before["active"], disabled.after["active"]) == (True, False)


def test_nobody_changes_their_own_account_and_the_last_admin_stays(client, ada):
    client.force_login(ada)
    for url, data in (
        (reverse("staff_role", args=[ada.pk]), {"role": "viewer"}),
        (reverse("staff_active", args=[ada.pk]), {"active": "0"}),
    ):
        page = client.post(url, data, follow=True).content.decode()
        assert "You cannot" in page and "your own account" in page
    ada.refresh_from_db()
    assert ada.is_active and ada.groups.get().name == "admin"
    with pytest.raises(StaffChangeRefused, match="ada is the last active admin"):
        staff_role_change(user=ada, role="manager", actor=None)  # e.g. from a shell
    assert not StaffAction.objects.filter(action__in=["staff.role_changed", "staff.disabled"]).exists()


def test_an_admin_resets_someones_second_factor(client, ada, manager):
    second_factor_device("maria")
    marias = _logged_in_client(client.__class__, "maria")
    client.force_login(ada)
    time.sleep(0.01)
    client.post(reverse("staff_reset_mfa", args=[manager.pk]))
    assert not TOTPDevice.objects.filter(user=manager).exists()
    assert marias.get("/")["Location"].startswith("/login/")
    assert StaffAction.objects.get(action="staff.second_factor_reset").actor_name == "ada"


@pytest.mark.parametrize("role", ["viewer", "manager"])
def test_only_admins_open_the_staff_pages(client, make_user, role):
    client.force_login(make_user("someone", role))
    assert client.get(reverse("staff_list")).status_code == 403
    assert (
        client.post(reverse("staff_invite"), {"username": "x", "email": "x@example.is", "role": "admin"}).status_code
        == 403
    )
    assert not get_user_model().objects.filter(username="x").exists()
