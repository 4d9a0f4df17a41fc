"""Claims when something breaks between the portal and SmartPages: the database connection killed right after a
POST that succeeded upstream (pg_terminate_backend, from a sandbox hook), SmartPages slower than the claim's
budget, and a 409 for the holder's own External ID that a manager settles by linking the pass by its Pass ID.
Every holder ends with exactly one pass upstream."""

from __future__ import annotations

import html
import os
import uuid
from collections import Counter

import psycopg
import pytest
from django.db import connection
from django.urls import reverse
from playwright.sync_api import expect

from conftest import SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN, login, start_gunicorn, suite_env, wait_for
from links.claims import pass_page_key
from members.models import Member
from members.services import MemberError, issuing
from sandbox import DEMO_TEMPLATE_ID, Faults

from .claim_factories import claim_over_http, link_path, mirror, open_and_claim

HOLDERS = 40


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


def _kill_portal_connections(_created_pass: dict) -> None:
    """The sandbox's hook: terminate every other backend on the test database, the claim's own among them,
    after the pass exists upstream and before the portal hears about it."""
    params = connection.get_connection_params()
    dsn = {key: params[key] for key in ("dbname", "user", "host", "port") if params.get(key)}
    with psycopg.connect(**dsn, autocommit=True) as killer:
        killed = killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()[0]
    assert killed >= 1


def _holder(row: int) -> dict:
    return {"name": f"Holder {row}", "email": f"holder{row}@example.is"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_external_id", [True, False], ids=["external-id", "no-external-id"])
def test_a_connection_killed_right_after_the_upstream_post_loses_no_pass_and_makes_no_second(
    client, sandbox, with_external_id
):
    mirror()
    sandbox.after_pass_created = _kill_portal_connections
    for row in range(HOLDERS):
        response = open_and_claim(
            client, link_path(fields=_holder(row), external_id=f"kill-{row}" if with_external_id else None)
        )
        assert response.status_code == 302, response.status_code  # the holder goes to their pass page
        page = client.get(response["Location"])
        assert page.status_code == 200
    sandbox.after_pass_created = None

    members = list(Member.objects.order_by("pk"))
    passes = sandbox.passes()
    holders_without_pass = [m.pk for m in members if m.status != Member.Status.ISSUED or m.pass_id is None]
    per_holder = Counter(p["inputFields"][0]["value"] for p in passes)
    duplicates = sum(count - 1 for count in per_holder.values())
    print(
        f"\nconnection killed after each of {HOLDERS} POSTs ({'with' if with_external_id else 'without'} External IDs):"
        f" {len(holders_without_pass)} holders without their pass, {duplicates} duplicate upstream passes"
    )
    assert (len(members), holders_without_pass, duplicates) == (HOLDERS, [], 0)
    assert {str(m.pass_id) for m in members} == {p["id"] for p in passes}
    assert all(m.send_started_at is None and m.next_attempt_at is None and m.issue_attempts == 1 for m in members)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_smartpages_slower_than_the_claim_budget_leaves_the_holder_pending_and_the_retry_adopts_the_one_pass(
    celery_worker_process, recovery_beat, live_sandbox
):
    """Through gunicorn, as production serves claims: the claim gives up after its 1 s read budget (the test's
    setting; 10 s in production) while SmartPages takes 2 s and does create the pass, so no holder meets a
    gunicorn timeout (3 s here, above the budget as deploy/gunicorn.conf.py keeps it). The worker's retry (its own 30 s
    budget) gets a 409 naming that pass, reads it and takes it: one pass per holder."""
    mirror()
    web, url, _log = start_gunicorn(
        suite_env(
            {
                "SMARTPAGES_API_URL": live_sandbox.url,
                "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
                "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
                "SMARTPAGES_REQUEST_CONNECT_TIMEOUT": "1",
                "SMARTPAGES_REQUEST_READ_TIMEOUT": "1",
                "GUNICORN_TIMEOUT": "3",
                "CLAIM_RATE": "100000/m",
            }
        ),
        log_name="slow-upstream-gunicorn",
        workers=2,
    )
    try:
        live_sandbox.faults = Faults(slow_seconds=2.0, scope="passes")
        before = len(live_sandbox.passes())
        holders = [_holder(row) | {"name": f"Slow Holder {row}"} for row in range(4)]
        statuses = [
            claim_over_http(url, link_path(fields=values, external_id=f"slow-{row}"))
            for row, values in enumerate(holders)
        ]
        assert statuses == [[200, 302, 200]] * len(holders)
        assert Member.objects.filter(status=Member.Status.PENDING).count() == len(holders)

        wait_for(
            lambda: Member.objects.filter(status=Member.Status.ISSUED).count() == len(holders),
            timeout=90,
            message="the retry task to issue every slow claim",
        )
    finally:
        web.terminate()
        web.wait(timeout=30)
    created = live_sandbox.passes()[before:]
    assert Counter(p["inputFields"][0]["value"] for p in created) == {values["name"]: 1 for values in holders}
    assert {str(m.pass_id) for m in Member.objects.all()} == {p["id"] for p in created}
    assert all("Pass created on SmartPages." in m.status_changes.last().reason for m in Member.objects.all())


def _pending_after_a_lost_reply(sandbox, settings) -> Member:
    """A member whose first POST reached SmartPages but whose reply never came back (read timeout)."""
    settings.SMARTPAGES_REQUEST_TIMEOUT = (1.0, 0.5)
    sandbox.faults = Faults(slow_seconds=1.0, scope="passes")
    member = issuing.member_issue(template=mirror(), values=_holder(7), external_id="lost-7", source="link").member
    assert member.status == Member.Status.PENDING and member.issue_attempts == 1
    wait_for(lambda: len(sandbox.passes()) == 1, timeout=10, message="the slow POST to land upstream")
    return member


@pytest.mark.django_db
def test_a_409_that_names_no_pass_after_a_lost_reply_is_left_for_a_manager_never_shown_as_someone_elses(
    client, sandbox, settings, manager
):
    member = _pending_after_a_lost_reply(sandbox, settings)
    upstream_pass = sandbox.passes()[0]
    sandbox.faults = Faults(conflict_without_pass_id=True)

    member = issuing.member_issue_retry(member=member).member

    assert (member.status, member.upstream_conflict, member.pass_link_needed) == (Member.Status.FAILED, True, True)
    assert "earlier attempt of the portal" in member.failure_reason
    holder_page = client.get(reverse("holder:pass", args=[pass_page_key(member=member)])).content.decode()
    assert "Your pass is almost ready." in holder_page
    assert "already" not in holder_page.lower() and upstream_pass["id"] not in holder_page

    client.force_login(manager)
    detail = client.get(reverse("members:member_detail", args=[member.pk])).content.decode()
    assert f'action="/members/{member.pk}/link-pass/"' in detail
    other = sandbox._create_pass(
        {
            "passTemplateId": upstream_pass["passTemplateId"],
            "externalIdentifier": "someone-else",
            "inputFields": upstream_pass["inputFields"],
        }
    )[1]
    refused = client.post(reverse("members:member_link_pass", args=[member.pk]), {"pass_id": other["id"]}, follow=True)
    assert "That pass has External ID “someone-else”, not this member's “lost-7”" in html.unescape(refused.text)
    assert Member.objects.get(pk=member.pk).pass_id is None

    linked = client.post(
        reverse("members:member_link_pass", args=[member.pk]), {"pass_id": upstream_pass["id"]}, follow=True
    )
    assert "Linked to the pass on SmartPages." in linked.text
    member.refresh_from_db()
    assert (member.status, str(member.pass_id), member.pass_link_needed) == ("issued", upstream_pass["id"], False)
    assert member.status_changes.last().by == manager
    holder_page = client.get(reverse("holder:pass", args=[pass_page_key(member=member)])).content.decode()
    assert f'id="pass-id">{upstream_pass["id"]}<' in holder_page


@pytest.mark.django_db
def test_a_409_that_names_the_pass_after_a_lost_reply_adopts_it(sandbox, settings):
    member = _pending_after_a_lost_reply(sandbox, settings)
    sandbox.faults = Faults()

    member = issuing.member_issue_retry(member=member).member

    assert (member.status, str(member.pass_id), member.issue_attempts) == ("issued", sandbox.passes()[0]["id"], 2)
    assert len(sandbox.passes()) == 1


@pytest.mark.django_db
def test_linking_refuses_a_pass_of_another_template_or_not_a_pass_id(sandbox, settings, manager):
    member = _pending_after_a_lost_reply(sandbox, settings)
    sandbox.faults = Faults(conflict_without_pass_id=True)
    member = issuing.member_issue_retry(member=member).member
    twin = sandbox.add_template(sandbox.get_template(DEMO_TEMPLATE_ID) | {"id": str(uuid.uuid4())})
    status, elsewhere = sandbox._create_pass(
        {
            "passTemplateId": twin["id"],
            "externalIdentifier": "lost-7",
            "inputFields": sandbox.passes()[0]["inputFields"],
        }
    )
    assert status == 201

    with pytest.raises(MemberError, match="another template"):
        issuing.member_link_pass(member=member, pass_id=elsewhere["id"], user=manager)
    with pytest.raises(MemberError, match="not a Pass ID"):
        issuing.member_link_pass(member=member, pass_id="lost-7", user=manager)
    with pytest.raises(MemberError, match="no pass with that Pass ID"):
        issuing.member_link_pass(member=member, pass_id="0b0e7a52-5d5c-4b8e-9c53-0a6e5d0c1f00", user=manager)
    assert Member.objects.get(pk=member.pk).status == Member.Status.FAILED


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_manager_links_the_flagged_pass_in_chromium_and_the_holder_then_sees_it(
    page, live_server, sandbox, settings, manager
):
    member = _pending_after_a_lost_reply(sandbox, settings)
    upstream_pass = sandbox.passes()[0]
    sandbox.faults = Faults(conflict_without_pass_id=True)
    member = issuing.member_issue_retry(member=member).member
    holder_url = live_server.url + reverse("holder:pass", args=[pass_page_key(member=member)])
    shots = os.environ.get("SHOTS_DIR")  # screenshots for a person to look at, when asked for

    page.goto(holder_url)
    expect(page.locator("section.pass")).to_contain_text("Your pass is almost ready.")
    if shots:
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 800})
            page.screenshot(path=f"{shots}/holder-almost-ready-{width}.png", full_page=True)

    login(page, live_server, "maria")
    page.goto(live_server.url + reverse("members:member_detail", args=[member.pk]))
    expect(page.locator("#link-pass")).to_contain_text("The holder is waiting for this pass.")
    if shots:
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=f"{shots}/member-link-form-{width}.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
    page.fill("#link-pass-id", "not-a-pass-id")
    page.click("#link-pass button[type=submit]")
    expect(page.locator("body")).to_contain_text("That is not a Pass ID")
    page.fill("#link-pass-id", upstream_pass["id"])
    page.click("#link-pass button[type=submit]")
    expect(page.locator("body")).to_contain_text("Linked to the pass on SmartPages.")
    expect(page.locator("#pass-id")).to_have_text(upstream_pass["id"])
    expect(page.locator("#link-pass")).to_have_count(0)

    page.goto(holder_url)
    expect(page.locator("#pass-id")).to_have_text(upstream_pass["id"])
