"""A login is not a role: an account in no group reads nothing, a viewer reads every staff page."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from links.models import LinkBatch, LinkBatchSend
from links.tests.factories import DATA, demo_template, make_links
from members.models import AutofillBackfill, Member, MemberBulkAction, MemberBulkOutcome, MemberRefreshRun
from members.tests.factories import make_member
from templates_sync.models import SyncRun

pytestmark = pytest.mark.django_db

# Pages anyone may open (the holder's side, signing in and out, the second factor of a login) and the admin,
# which has its own checks.
PUBLIC_URL_NAMES = {
    "login",
    "logout",
    "healthz",
    "set_language",
    "claim",
    "pass",
    "short_link",
    "admin_login",
    "second_factor_verify",
    "second_factor_enrol",
    "staff_set_password",
    # One's own account (password, recovery codes): every login has one, whatever its role.
    "account",
    "password_change",
    "recovery_codes_new",
    # The outbox's public ends (signed link, Twilio's signed webhooks); django-anymail's sit under anymail/.
    "unsubscribe",
    "twilio_status",
    "twilio_inbound",
}
# Pages a GET of which already needs the manager (or, for the audit records, the admin) role: a viewer is
# refused them.
MANAGER_ONLY_PAGES = {
    "member_add_choose",
    "member_add",
    "member_edit",
    "upload",
    "batch_remap",
    "batch_delete",
    "batch_send",  # sending a batch's links needs the send permission, a manager's
    "auth_event_list",
    "staff_action_list",
    "staff_list",
    "staff_invite",
}
# Pages that exist only with DEBUG on (`make run`): 404 here.
DEBUG_ONLY_PAGES = {"outbox"}
# Fixed samples: the test ids must be the same in every collecting process (pytest-xdist compares them).
SAMPLES = {"int": "1", "uuid": "5dac77da-b8a7-4148-bf9a-708ff6e15999", "str": "x", "slug": "x", "path": "x"}


def _staff_urls() -> list[tuple[str, str]]:
    """Every routed staff URL (name, path) with sample arguments; read from the resolver, so a page added
    later is checked without anyone remembering to list it here."""

    def walk(resolver, prefix=""):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                if not str(entry.pattern).startswith(("admin/", "anymail/")):
                    yield from walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and entry.name not in PUBLIC_URL_NAMES:
                route = prefix + str(entry.pattern)
                for converter, sample in SAMPLES.items():
                    route = re.sub(rf"<{converter}:\w+>", sample, route)
                yield entry.name, "/" + re.sub(r"<\w+>", "x", route)

    return list(walk(get_resolver()))


@pytest.fixture
def no_role(db):
    return get_user_model().objects.create_user(username="nyr", password="correct horse battery")


def test_the_resolver_gives_every_kind_of_staff_page():
    names = {name for name, _ in _staff_urls()}
    assert {
        "dashboard",
        "template_detail",
        "run_list",
        "member_list",
        "member_export",
        "member_detail",
        "autofill_settings",
        "backfill_status",
        "batch_list",
        "batch_download",
    } <= names
    assert not names & PUBLIC_URL_NAMES


@pytest.mark.parametrize("name,url", _staff_urls())
def test_an_account_with_no_role_is_refused_every_staff_url(client, no_role, name, url):
    client.force_login(no_role)
    response = client.get(url)
    if response.status_code == 405:  # an action: it answers POST only
        response = client.post(url)
    assert response.status_code == 403, (name, url)
    body = response.content.decode()
    assert "Your account has no role yet" in body, (name, url)
    assert 'class="mainnav"' not in body  # no menu of pages that would all refuse it too


def test_no_role_reads_no_member_data_even_with_real_ids(client, no_role, sandbox):
    member = make_member(demo_template(), name="Laura Loopy", email="laura.loopy@example.com")
    client.force_login(no_role)
    for url in (
        reverse("members:member_list"),
        reverse("members:member_export"),
        reverse("members:member_detail", args=[member.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert not getattr(response, "streaming", False)
        assert b"laura.loopy" not in response.content and b"Laura Loopy" not in response.content


def test_a_refused_viewer_still_gets_the_ordinary_not_allowed_page(client, viewer, sandbox):
    client.force_login(viewer)
    response = client.get(reverse("members:member_add_choose"))
    assert response.status_code == 403
    body = response.content.decode()
    assert "Your role does not allow this." in body and "no role yet" not in body
    assert 'class="mainnav"' in body


def test_a_viewer_opens_every_read_page(client, viewer, sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    batch = make_links(demo_template(), DATA / "01_plain_utf8.csv")
    template = batch.template
    member = make_member(template, name="Laura Loopy", email="laura.loopy@example.com")
    run = SyncRun.objects.latest("pk")
    backfill = AutofillBackfill.objects.create(template=template, source="email", status="succeeded")
    refresh_run = MemberRefreshRun.objects.create(trigger="beat", status="succeeded", total=7, checked=7)
    send = LinkBatchSend.objects.create(batch=batch, channels="email", default_language="is", status="succeeded")
    bulk_action = MemberBulkAction.objects.create(action="refresh", status="succeeded", total=1, done=1, succeeded=1)
    MemberBulkOutcome.objects.create(action=bulk_action, member=member, outcome="succeeded")
    # name → (URL with real ids, something the page must show)
    read_pages = {
        "dashboard": (reverse("dashboard"), "Dashboard"),
        "template_list": (reverse("template_list"), template.name),
        "template_detail": (reverse("template_detail", args=[template.pk]), template.name),
        "run_list": (reverse("templates_sync:run_list"), "succeeded"),
        "run_status": (reverse("templates_sync:run_status", args=[run.pk]), '"status": "succeeded"'),
        "member_list": (reverse("members:member_list"), "Laura Loopy"),
        "member_export": (reverse("members:member_export"), "laura.loopy@example.com"),
        "member_detail": (reverse("members:member_detail", args=[member.pk]), "Laura Loopy"),
        "autofill_settings": (reverse("members:autofill_settings", args=[template.pk]), "Auto fill External ID"),
        "backfill_status": (reverse("members:backfill_status", args=[backfill.pk]), '"status": "succeeded"'),
        "refresh_runs": (reverse("members:refresh_runs"), "Refresh history"),
        "refresh_run_status": (reverse("members:refresh_run_status", args=[refresh_run.pk]), '"checked": 7'),
        "bulk_detail": (reverse("members:bulk_detail", args=[bulk_action.pk]), "Laura Loopy"),
        "bulk_status": (reverse("members:bulk_status", args=[bulk_action.pk]), '"succeeded": 1'),
        "batch_list": (reverse("links:batch_list"), batch.original_name),
        "template_batches": (reverse("links:template_batches", args=[template.pk]), batch.original_name),
        "batch_detail": (reverse("links:batch_detail", args=[batch.pk]), batch.original_name),
        "batch_status": (reverse("links:batch_status", args=[batch.pk]), '"status": "succeeded"'),
        "batch_send_status": (reverse("links:batch_send_status", args=[batch.pk, send.pk]), '"status": "succeeded"'),
        # The errors file (its header names the link column); the links file itself is a manager's.
        "batch_download": (reverse("links:batch_download", args=[batch.pk, "errors"]), "smartpass_link"),
        "template_sample": (reverse("links:template_sample", args=[template.pk]), "Guðrún Jónsdóttir"),
        # The batch's delivery table (no message texts, so no links): its header row.
        "batch_messages_csv": (reverse("links:batch_messages_csv", args=[batch.pk]), "channel"),
        "suppression_list": (reverse("delivery:suppression_list"), "No address is suppressed"),
    }
    client.force_login(viewer)

    # Every staff URL a viewer may GET is listed above: a new read page cannot go untested.
    for name, url in _staff_urls():
        status = client.get(url).status_code
        if status == 403:
            assert name in MANAGER_ONLY_PAGES, (name, url)
        elif name in DEBUG_ONLY_PAGES:
            assert status == 404, (name, url)
        elif status != 405:
            assert name in read_pages, (name, url, status)

    for name, (url, shown) in read_pages.items():
        response = client.get(url)
        assert response.status_code == 200, (name, url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert shown in body.decode("utf-8-sig"), (name, shown)
    assert Member.objects.count() == 1 and LinkBatch.objects.count() == 1  # reading changed nothing
