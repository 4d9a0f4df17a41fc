"""Sign-in events and staff actions: what is recorded, that nobody can change or delete it, its pages."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from audit.models import AppendOnlyError, AuthEvent, StaffAction
from audit.services import audit_records_delete_expired, auth_event_record, typed_name_fingerprint
from links.models import LinkBatchEvent
from members.models import AutofillChange, MemberStatusChange
from templates_sync.models import SyncRun

pytestmark = pytest.mark.django_db
HISTORY_MODELS = [SyncRun, LinkBatchEvent, MemberStatusChange, AutofillChange, AuthEvent, StaffAction]


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def admin_user(make_user):
    user = make_user("ada", "admin")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def test_failed_logins_keep_the_account_or_unknown_with_a_fingerprint_and_the_address(client, manager, settings):
    settings.CLIENT_IP_HEADER = "X-Real-IP"
    client.post(reverse("login"), {"username": "maria", "password": "wrong"}, HTTP_X_REAL_IP="198.51.100.23")
    client.post(
        reverse("login"),
        {"username": "hunter2-my-password", "password": "x"},
        HTTP_X_REAL_IP="198.51.100.24",
        HTTP_USER_AGENT="curl/8",
    )
    known, unknown = AuthEvent.objects.filter(kind=AuthEvent.Kind.LOGIN_FAILED).order_by("at")
    assert (known.user, known.username, known.ip_address, known.typed_fingerprint) == (
        manager,
        "maria",
        "198.51.100.23",
        "",
    )
    assert (unknown.user, unknown.username, unknown.ip_address, unknown.user_agent) == (
        None,
        "(unknown)",
        "198.51.100.24",
        "curl/8",
    )
    assert unknown.typed_fingerprint == typed_name_fingerprint("hunter2-my-password") != ""
    assert not AuthEvent.objects.filter(detail__contains="hunter2").exists()


def test_a_login_and_a_logout_are_recorded(client, manager):
    client.post(reverse("login"), {"username": "maria", "password": "correct horse battery"})
    client.post(reverse("logout"))
    assert list(AuthEvent.objects.order_by("at").values_list("kind", "username")) == [
        ("login", "maria"),
        ("logout", "maria"),
    ]


def test_records_cannot_be_changed_or_deleted_one_by_one(manager):
    event = auth_event_record(kind=AuthEvent.Kind.LOGIN, user=manager)
    event.detail = "tampered"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuthEvent.objects.get().detail == ""


def test_retention_deletes_old_sign_in_events_and_keeps_staff_actions_by_default(manager):
    old = auth_event_record(kind=AuthEvent.Kind.LOGIN, user=manager)
    AuthEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=366))
    recent = auth_event_record(kind=AuthEvent.Kind.LOGIN, user=manager)
    action = StaffAction.objects.create(actor_name="maria", action="x")
    StaffAction.objects.filter(pk=action.pk).update(at=timezone.now() - timedelta(days=4000))
    assert audit_records_delete_expired(auth_events_days=365, audit_days=0) == {"auth_events": 1, "staff_actions": 0}
    assert list(AuthEvent.objects.all()) == [recent]
    assert StaffAction.objects.count() == 1


@pytest.mark.parametrize("role", ["viewer", "manager", "admin", "superuser"])
def test_the_admin_offers_no_add_change_or_delete_on_any_history_model(client, make_user, role, sandbox):
    from templates_sync import sync

    sync.templates_sync_all()
    run = SyncRun.objects.latest("pk")
    if role == "superuser":
        user = get_user_model().objects.create_superuser("root", password="correct horse battery")
    else:
        user = make_user(f"{role}-person", role)
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    client.force_login(user)
    request = client.get("/admin/").wsgi_request
    for model in HISTORY_MODELS:
        model_admin = admin.site._registry[model]
        assert not model_admin.has_delete_permission(request), model
        assert not model_admin.has_change_permission(request), model
        assert not model_admin.has_add_permission(request), model
    delete_url = reverse("admin:templates_sync_syncrun_delete", args=[run.pk])
    assert client.get(delete_url).status_code in (302, 403)
    assert client.post(delete_url, {"post": "yes"}).status_code in (302, 403)
    assert SyncRun.objects.filter(pk=run.pk).exists()
    changelist = client.get(reverse("admin:templates_sync_syncrun_changelist"))
    if changelist.status_code == 200:
        assert "delete_selected" not in changelist.content.decode()


def test_the_events_page_shows_failed_attempts_to_admins_only_and_exports_them(client, admin_user, manager):
    client.post(reverse("login"), {"username": "maria", "password": "wrong"}, REMOTE_ADDR="203.0.113.50")
    client.post(reverse("login"), {"username": "nobody", "password": "wrong"}, REMOTE_ADDR="203.0.113.51")
    client.force_login(manager)
    assert client.get(reverse("audit:auth_event_list")).status_code == 403
    client.force_login(admin_user)
    page = client.get(reverse("audit:auth_event_list"), {"kind": "login_failed"}).content.decode()
    assert "maria" in page and "203.0.113.50" in page and "(unknown)" in page and "203.0.113.51" in page
    assert typed_name_fingerprint("nobody") in page
    filtered = client.get(reverse("audit:auth_event_list"), {"who": "maria", "kind": "login_failed"})
    assert "203.0.113.51" not in filtered.content.decode()
    export = client.get(reverse("audit:auth_event_list"), {"kind": "login_failed", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert {(row["account"], row["address"]) for row in rows} == {
        ("maria", "203.0.113.50"),
        ("(unknown)", "203.0.113.51"),
    }


def test_every_successful_change_a_person_makes_is_a_staff_action(client, manager, sandbox):
    client.force_login(manager)
    response = client.post(reverse("templates_sync:sync_now"))
    assert response.status_code == 302
    action = StaffAction.objects.get()
    assert (action.actor, action.actor_name, action.action) == (manager, "maria", "templates_sync:sync_now")
    client.post(reverse("logout"))
    assert StaffAction.objects.count() == 1  # signing out is a sign-in event, not a staff action


def test_logs_name_the_account_and_address_not_asterisks(client, manager, caplog):
    caplog.set_level("INFO")
    client.post(reverse("login"), {"username": "maria", "password": "wrong"}, REMOTE_ADDR="192.0.2.44")
    client.post(reverse("login"), {"username": "s3cret-typed-here", "password": "x"}, REMOTE_ADDR="192.0.2.45")
    text = caplog.text
    assert 'account: "maria", ip_address: "192.0.2.44"' in text  # django-axes' own line
    assert "auth event login_failed: account=maria ip=192.0.2.44" in text
    fingerprint = typed_name_fingerprint("s3cret-typed-here")
    assert f'account: "(unknown) {fingerprint}", ip_address: "192.0.2.45"' in text
    assert "********" not in text and "s3cret-typed-here" not in text


def test_admins_read_the_records_in_the_django_admin_too(client, admin_user, manager):
    client.post(reverse("login"), {"username": "maria", "password": "wrong"}, REMOTE_ADDR="203.0.113.60")
    client.force_login(admin_user)
    changelist = client.get(reverse("admin:audit_authevent_changelist"), {"kind__exact": "login_failed"})
    assert changelist.status_code == 200
    body = changelist.content.decode()
    assert "203.0.113.60" in body and "maria" in body and "Delete" not in body
    event = AuthEvent.objects.get(kind=AuthEvent.Kind.LOGIN_FAILED)
    detail = client.get(reverse("admin:audit_authevent_change", args=[event.pk])).content.decode()
    assert "203.0.113.60" in detail and 'name="_save"' not in detail
    for name in ("audit_staffaction", "links_linkbatchevent", "members_memberstatuschange", "members_autofillchange"):
        assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200, name
