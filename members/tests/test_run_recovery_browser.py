"""What a manager sees in Chromium of a bulk action whose worker died: queued again with its progress kept, then
finished with a note that it was picked up again. At 1280 and 390 px (screenshots with SHOTS_DIR set)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from background import recovery
from conftest import login
from members.models import MemberBulkAction, MemberBulkOutcome
from members.services import bulk

from .factories import mirror_template
from .test_browser_daily import issue, look

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_bulk_action_picked_up_again_after_its_worker_died_says_so(page, live_server, sandbox, manager, monkeypatch):
    club = mirror_template()
    members = [issue(club, f"Holder {n}", f"holder{n}@example.is") for n in range(4)]
    # The test plays the worker's part itself: the session's worker must not be sent the action.
    monkeypatch.setattr(bulk, "enqueue_after_commit", lambda *args, **kwargs: None)
    action = bulk.member_bulk_request(action="refresh", member_ids=[m.pk for m in members], user=manager)
    # A worker took it, did one member and died; the sweep queued it again.
    assert recovery.take(action) is not None
    first = MemberBulkOutcome.objects.filter(action=action).order_by("id").first()
    bulk._member_act(row=first, action="refresh", client=None, limiter=bulk.smartpages_rate_limiter())
    MemberBulkAction.objects.filter(pk=action.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert recovery.requeue_stale(MemberBulkAction.objects.all(), lambda row: None) == 1

    login(page, live_server, manager.username)
    page.goto(f"{live_server.url}/members/bulk/{action.pk}/")
    progress = page.locator("#bulk-progress")
    expect(progress.locator("[data-field=status]")).to_have_text("queued")
    expect(progress).to_contain_text("1 of 4")
    expect(page.locator("#bulk-resumed")).to_contain_text("queued again: it goes on where it left off")
    look(page, "bulk-queued-again")

    bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk))
    page.reload()
    expect(page.locator("#bulk-progress [data-field=status]")).to_have_text("succeeded")
    expect(page.locator("#bulk-resumed")).to_contain_text("picked up where it left off")
    expect(page.locator("#bulk-resumed")).to_contain_text("No member was acted on twice")
    look(page, "bulk-picked-up-again")
