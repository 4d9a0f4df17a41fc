"""Staff sessions (ASVS 3.3) and passwords (2.1): idle and absolute lifetime, sessions ended by account changes,
__Host- cookie names under HTTPS, the 12-character minimum."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from django.contrib.auth import password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.urls import reverse

from audit.models import AuthEvent
from portal.services import staff_account_save

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


def _logged_in(client, username="maria"):
    response = client.post(reverse("login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


class _Clock:
    """The session middleware's clock, moved on instead of sleeping (`passes`)."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def passes(self, seconds: float) -> None:
        self.ahead += seconds

    def time(self) -> float:
        return time.time() + self.ahead


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr("portal.middleware.time", clock)
    return clock


def _refused(client) -> bool:
    response = client.get("/")
    return response.status_code == 302 and response["Location"].startswith("/login/")


def test_an_idle_session_is_refused_after_the_timeout(client, manager, settings, clock):
    settings.SESSION_IDLE_SECONDS = 2
    _logged_in(client)
    clock.passes(1.0)
    assert client.get("/").status_code == 200  # activity within the limit keeps it going
    clock.passes(2.5)
    assert _refused(client)
    assert "_auth_user_id" not in client.session
    assert "Your session has ended" in client.get("/login/").content.decode()
    ended = AuthEvent.objects.get(kind=AuthEvent.Kind.SESSION_ENDED)
    assert (ended.username, ended.detail) == ("maria", "idle for more than 2 seconds")


def test_a_busy_session_still_ends_at_its_absolute_lifetime(client, manager, settings, clock):
    settings.SESSION_MAX_SECONDS = 2
    _logged_in(client)
    for _ in range(3):
        clock.passes(0.5)
        assert client.get("/").status_code == 200
    clock.passes(1.0)
    assert _refused(client)
    assert AuthEvent.objects.get(kind=AuthEvent.Kind.SESSION_ENDED).detail == "older than 2 seconds"


def test_a_disabled_accounts_open_session_is_refused_at_its_next_request(client, manager):
    _logged_in(client)
    manager.is_active = False
    manager.save()
    assert _refused(client)
    assert "_auth_user_id" not in client.session
    ended = AuthEvent.objects.get(kind=AuthEvent.Kind.SESSION_ENDED)
    assert (ended.user, ended.detail) == (manager, "the account is disabled")
    # Every session of the account is over, even if the account is enabled again.
    manager.is_active = True
    manager.save()
    assert _refused(client)


def test_a_role_change_ends_every_session_of_the_account(client, manager):
    _logged_in(client)
    other = client.__class__()
    _logged_in(other)
    time.sleep(0.01)
    staff_account_save(username="maria", role="viewer")
    assert _refused(client) and _refused(other)
    _logged_in(client)  # a new login has the new role
    assert set(manager.groups.values_list("name", flat=True)) == {"viewer"}


def test_a_password_change_ends_every_session_and_is_a_sign_in_event(client, manager):
    _logged_in(client)
    time.sleep(0.01)
    manager.set_password("a new long passphrase 42")
    manager.save()
    assert _refused(client)
    assert AuthEvent.objects.filter(kind=AuthEvent.Kind.PASSWORD_CHANGED, user=manager).exists()


def test_a_role_unchanged_by_create_staff_leaves_sessions_alone(client, manager):
    _logged_in(client)
    manager.groups.set([Group.objects.get(name="manager")])
    assert client.get("/").status_code == 200


@pytest.mark.parametrize(
    "password,reason",
    [("Xk9#mQ2pLw7", "at least 12 characters"), ("password1234", "too common"), ("maria.example", "too similar")],
)
def test_passwords_need_twelve_characters_and_are_not_common_or_like_the_name(manager, password, reason):
    manager.email = "maria@example.is"
    with pytest.raises(ValidationError, match=reason):
        password_validation.validate_password(password, user=manager)
    password_validation.validate_password("Xk9#mQ2pLw7!", user=manager)


@pytest.mark.slow  # starts Python processes on the production settings
def test_production_cookies_carry_the_host_prefix_and_the_set_lifetimes():
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": "p" + uuid.uuid4().hex + uuid.uuid4().hex,
        "SMARTPASS_LINK_KEYS": "k1:" + "B" * 43 + "=",
    }
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_NAME, s.CSRF_COOKIE_NAME, s.SESSION_COOKIE_SECURE, s.SESSION_IDLE_SECONDS, "
        "s.SESSION_MAX_SECONDS, s.SESSION_COOKIE_AGE, s.MFA_REQUIRED, s.AUTH_EVENTS_DAYS)"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == [
        "__Host-sessionid",
        "__Host-csrftoken",
        "True",
        "1800",
        "43200",
        "43200",
        "True",
        "365",
    ], result.stderr
    debug = subprocess.run(
        [sys.executable, "-c", script], env={**env, "DEBUG": "true"}, capture_output=True, text=True, timeout=60
    )
    assert debug.stdout.split()[:3] == ["sessionid", "csrftoken", "False"]
    assert debug.stdout.split()[6] == "False"  # make run's demo logins need no second factor


def test_changing_ones_own_password_keeps_this_session_and_ends_the_others(client, manager):
    _logged_in(client)
    other = client.__class__()
    _logged_in(other)
    time.sleep(0.01)
    response = client.post(
        reverse("password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a new long passphrase 42",
            "new_password2": "a new long passphrase 42",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("account")
    assert "Your password is changed" in client.get(reverse("account")).content.decode()
    assert _refused(other)
    assert AuthEvent.objects.filter(kind=AuthEvent.Kind.PASSWORD_CHANGED, user=manager).count() == 1
    refused = client.post(
        reverse("password_change"),
        {"old_password": "a new long passphrase 42", "new_password1": "short", "new_password2": "short"},
    )
    assert "at least 12 characters" in refused.content.decode()
