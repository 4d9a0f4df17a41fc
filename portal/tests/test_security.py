"""Login on every staff page, roles, login throttling, health endpoint, production settings."""

import os
import subprocess
import sys
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from templates_sync.models import SyncRun

pytestmark = pytest.mark.django_db

# The holder's side (links.public_urls) is public by design: a SmartPass link and its pass page need no login.
PUBLIC_URL_NAMES = {
    "login",
    "admin_login",
    "staff_set_password",
    "healthz",
    "set_language",
    "claim",
    "pass",
    "short_link",
}
# The outbox's public ends: the signed unsubscribe link, and Twilio's webhooks (checked by their signature;
# delivery/tests/test_webhooks.py). django-anymail's webhooks (anymail/…) check ANYMAIL_WEBHOOK_SECRET.
PUBLIC_URL_NAMES |= {"unsubscribe", "twilio_status", "twilio_inbound"}
PUBLIC_PREFIXES = ("admin/", "anymail/")


def _staff_urls():
    """Every routed URL of the portal (admin aside), with sample arguments filled in."""
    # Fixed samples: the test ids must be the same in every collecting process (pytest-xdist compares them).
    samples = {"int": "1", "uuid": "5dac77da-b8a7-4148-bf9a-708ff6e15999", "str": "x", "slug": "x", "path": "x"}

    def walk(resolver, prefix=""):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                if str(entry.pattern).startswith(PUBLIC_PREFIXES):
                    continue
                yield from walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                route = prefix + str(entry.pattern)
                for converter_name, sample in samples.items():
                    import re

                    route = re.sub(rf"<{converter_name}:\w+>", sample, route)
                route = re.sub(r"<\w+>", "x", route)
                yield entry.name, "/" + route.lstrip("^").rstrip("$")

    return [(name, url) for name, url in walk(get_resolver()) if name not in PUBLIC_URL_NAMES]


def test_the_portal_has_staff_urls_to_check():
    names = {name for name, _ in _staff_urls()}
    assert {"dashboard", "template_list", "template_detail", "sync_now", "run_list"} <= names


@pytest.mark.parametrize("name,url", _staff_urls())
def test_anonymous_requests_to_every_staff_url_go_to_login(client, name, url):
    for method in (client.get, client.post):
        response = method(url)
        assert response.status_code == 302, (name, url)
        assert response["Location"].startswith("/login/?next="), (name, url)


def test_a_viewer_sees_no_manager_buttons_and_a_direct_post_is_refused(client, viewer, sandbox):
    from templates_sync import sync

    sync.templates_sync_all()
    client.force_login(viewer)
    template_id = sandbox.template_ids()[0]

    for url in (reverse("dashboard"), reverse("template_list"), reverse("template_detail", args=[template_id])):
        body = client.get(url).content.decode()
        assert "Sync now" not in body and ">Refresh<" not in body, url

    assert client.post(reverse("templates_sync:sync_now")).status_code == 403
    assert client.post(reverse("templates_sync:refresh", args=[template_id])).status_code == 403
    assert SyncRun.objects.filter(trigger="manual").count() == 0


def test_a_manager_can_start_a_sync_and_follow_it(client, manager, sandbox):
    client.force_login(manager)
    assert "Sync now" in client.get(reverse("dashboard")).content.decode()

    response = client.post(reverse("templates_sync:sync_now"), {"next": reverse("dashboard")})

    run = SyncRun.objects.get(trigger="manual")
    assert (run.status, run.triggered_by) == ("queued", manager)
    assert response["Location"] == f"{reverse('dashboard')}?run={run.pk}"
    status = client.get(reverse("templates_sync:run_status", args=[run.pk])).json()
    assert status["status"] == "queued" and status["finished"] is False


def test_a_post_without_csrf_token_is_refused(manager):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(manager)
    assert strict.post(reverse("templates_sync:sync_now")).status_code == 403
    assert not SyncRun.objects.exists()


def test_a_correct_login_reaches_the_dashboard(client, manager):
    from django.core.cache import cache

    cache.clear()
    response = client.post(reverse("login"), {"username": "maria", "password": "correct horse battery"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard")
    assert "Dashboard" in response.content.decode()


def test_health_reports_database_broker_and_cache_without_secrets(client, settings):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "cache": "ok"}
    assert settings.SECRET_KEY not in response.content.decode()


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_values():
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": "p" + uuid.uuid4().hex + uuid.uuid4().hex,
        "ALLOWED_HOSTS": "portal.example.is",
        "DATABASE_URL": os.environ.get("DATABASE_URL", "sqlite:///db.sqlite3"),
        "SMARTPASS_LINK_KEYS": "k1:" + "B" * 43 + "=",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.slow
def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "portal.settings", "DEBUG": "false"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
