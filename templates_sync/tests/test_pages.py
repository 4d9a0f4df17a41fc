"""The template mirror's pages as rendered for staff, on the test database, with the sandbox over HTTP."""

import re

import pytest
from django.urls import reverse

from sandbox import HOSTILE_TEMPLATE_ID, Faults
from templates_sync import sync
from templates_sync.models import PassTemplate, SyncRun
from templates_sync.templatetags.upstream import http_url

pytestmark = pytest.mark.django_db


def test_only_http_urls_from_upstream_become_links_on_the_template_page(client, viewer, sandbox):
    safe_id, hostile_ids = sandbox.template_ids()[1], sandbox.template_ids()[2:5]
    for template_id, url in zip(
        hostile_ids, ["JavaScript:alert(1)", " data:text/html,<b>x</b>", "//evil.example/"], strict=False
    ):
        sandbox.update_template(template_id, deliveryPageUrl=url)
    sandbox.faults = Faults(hostile_items=True)
    assert sync.templates_sync_all().status == "succeeded"
    client.force_login(viewer)

    def delivery_page_cell(template_id: str) -> str:
        body = client.get(reverse("template_detail", args=[template_id])).content.decode()
        return re.search(r"<dt>Delivery page</dt><dd>(.*?)</dd>", body, re.S).group(1)

    safe_url = PassTemplate.objects.get(pk=safe_id).delivery_page_url
    assert safe_url.startswith("http://127.0.0.1:")
    assert f'<a href="{safe_url}" rel="noopener noreferrer" target="_blank">' in delivery_page_cell(safe_id)
    for template_id in [HOSTILE_TEMPLATE_ID, *hostile_ids]:
        cell = delivery_page_cell(template_id)
        assert "<a " not in cell and "href" not in cell, cell
        assert "(not a web address; not linked)" in cell
    assert "javascript:alert(document.cookie)" in delivery_page_cell(HOSTILE_TEMPLATE_ID)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://pass.example/x", "https://pass.example/x"),
        ("HTTP://pass.example", "HTTP://pass.example"),
        ("javascript:alert(1)", ""),
        ("java\tscript:alert(1)", ""),
        ("http:alert(1)", ""),
        ("ftp://files.example", ""),
        ("http://[::1", ""),
        (None, ""),
    ],
)
def test_the_http_url_filter_keeps_web_addresses_only(value, expected):
    assert http_url(value) == expected


def test_sync_now_says_skipped_when_a_sync_is_already_running(client, manager, sandbox):
    from django.utils import timezone

    now = timezone.now()
    running = SyncRun.objects.create(trigger="beat", status="running", started_at=now, heartbeat_at=now, pages=3)
    client.force_login(manager)

    response = client.post(reverse("templates_sync:sync_now"), {"next": reverse("template_list")}, follow=True)

    body = response.content.decode()
    assert "Skipped: a sync is already running; its progress shows below." in body
    assert f"Full sync #{running.pk}" in body  # the page follows the run that is running
    assert response.redirect_chain[-1][0] == f"{reverse('template_list')}?run={running.pk}"
    skipped = SyncRun.objects.get(trigger="manual")
    assert (skipped.status, skipped.triggered_by, skipped.warning) == (
        "skipped",
        manager,
        "Skipped: another full sync was already running.",
    )
    assert not SyncRun.objects.filter(status="queued").exists()


def test_sync_now_starts_a_sync_when_the_running_one_lost_its_worker(client, manager, sandbox, settings):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS + 1)
    SyncRun.objects.create(trigger="beat", status="running", started_at=long_ago, heartbeat_at=long_ago)
    client.force_login(manager)

    body = client.post(reverse("templates_sync:sync_now"), follow=True).content.decode()

    assert "Sync started; its progress shows below." in body
    assert SyncRun.objects.get(trigger="manual").status == "queued"


@pytest.mark.parametrize(
    "posted_next, lands_on",
    [
        ("/templates/", "/templates/"),  # the page whose button was pressed
        ("https://evil.example/templates/", "/sync/"),  # another site: the sync history instead
        ("", "/sync/"),
    ],
)
def test_sync_now_comes_back_to_the_page_that_asked_and_only_to_this_site(
    client, manager, sandbox, posted_next, lands_on
):
    client.force_login(manager)

    response = client.post(reverse("templates_sync:sync_now"), {"next": posted_next})

    run = SyncRun.objects.get(trigger="manual")
    assert response.status_code == 302 and response.headers["Location"] == f"{lands_on}?run={run.pk}"
