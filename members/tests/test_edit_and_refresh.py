"""Editing a member (PUT upstream), the refresh job's service and command, bulk actions inline, autofill
conflict resolution, and a viewer refused every one of those writes. All against the sandbox over HTTP."""

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from background.rate_limit import SharedRateLimiter
from members import services
from members.identity import InvalidIdentity
from members.models import (
    Member,
    MemberBulkAction,
    MemberBulkOutcome,
    MemberChange,
    MemberRefreshRun,
    TemplateMemberCount,
)
from members.services import autofill, bulk, issuing, passes, refresh

from .factories import make_member

pytestmark = pytest.mark.django_db

LAURA = {"name": "Laura Loopy", "email": "laura@example.com", "phone": "555 1234"}


def issued(template, values=LAURA, external_id=None) -> Member:
    member = issuing.member_issue(template=template, values=values, external_id=external_id, source="link").member
    assert member.status == Member.Status.ISSUED
    return member


def upstream_values(sandbox, member) -> dict:
    found = next(p for p in sandbox.passes() if p["id"] == str(member.pass_id))
    return {f["identifier"]: f["value"] for f in found["inputFields"]}


# --- edit ---------------------------------------------------------------------------------------------------
def test_an_edit_is_sent_upstream_and_recorded_with_who_and_old_to_new(club, sandbox, manager):
    member = issued(club)
    puts = sandbox.request_count("PUT")

    passes.member_edit(
        member=member,
        values={**LAURA, "name": "Laura Þóra Loopy", "email": "LAURA@new.is"},
        external_id="",
        user=manager,
    )

    assert sandbox.request_count("PUT") == puts + 1
    assert upstream_values(sandbox, member)["name"] == "Laura Þóra Loopy"
    assert upstream_values(sandbox, member)["email"] == "laura@new.is"  # validated and normalised first
    member.refresh_from_db()
    assert (member.display_name, member.email) == ("Laura Þóra Loopy", "laura@new.is")
    assert "laura thora loopy" in member.search_text
    change = member.changes.get()
    assert (change.via, change.by) == (MemberChange.Via.EDIT, manager)
    assert change.changes == {
        "email": ["laura@example.com", "laura@new.is"],
        "name": ["Laura Loopy", "Laura Þóra Loopy"],
    }


def test_an_external_id_can_be_set_once_and_never_changed(club, sandbox, manager):
    member = issued(club)
    passes.member_edit(member=member, values=LAURA, external_id="card-17", user=manager)
    member.refresh_from_db()
    assert member.external_id == "card-17"
    assert next(p for p in sandbox.passes() if p["id"] == str(member.pass_id))["externalIdentifier"] == "card-17"
    puts = sandbox.request_count("PUT")
    with pytest.raises(services.MemberError, match="cannot be changed once set"):
        passes.member_edit(member=member, values=LAURA, external_id="card-18", user=manager)
    assert sandbox.request_count("PUT") == puts


def test_invalid_values_are_refused_before_any_upstream_call(club, sandbox, manager):
    member = issued(club)
    puts = sandbox.request_count("PUT")
    with pytest.raises(services.InvalidMemberValues) as refused:
        passes.member_edit(member=member, values={**LAURA, "email": "not an email"}, external_id="", user=manager)
    assert "email" in refused.value.errors and sandbox.request_count("PUT") == puts


def test_an_upstream_refusal_shows_its_reason_and_changes_nothing_locally(club, sandbox, manager, client):
    member = issued(club)
    sandbox.change_pass(str(member.pass_id), status="VOIDED")  # voided on SmartPages, not known here yet
    client.force_login(manager)
    url = reverse("members:member_edit", args=[member.pk])
    response = client.post(
        url,
        {
            "field_name": "Someone Else",
            "field_email": "laura@example.com",
            "field_phone": "555 1234",
            "external_id": "",
        },
    )
    assert response.status_code == 200
    assert "a voided pass cannot be updated" in response.content.decode()
    member.refresh_from_db()
    assert member.display_name == "Laura Loopy" and not member.changes.exists()


def test_the_edit_page_saves_and_the_history_shows_it(club, sandbox, manager, client):
    member = issued(club)
    client.force_login(manager)
    url = reverse("members:member_edit", args=[member.pk])
    assert 'value="Laura Loopy"' in client.get(url).content.decode()
    response = client.post(
        url,
        {
            "field_name": "Laura B. Loopy",
            "field_email": "laura@example.com",
            "field_phone": "555 1234",
            "external_id": "",
        },
        follow=True,
    )
    body = response.content.decode()
    assert "Saved on SmartPages and here." in body
    assert "Laura B. Loopy" in body and "Edited by staff" in body and "maria" in body


def test_a_member_whose_external_id_predates_the_autofill_source_can_still_be_edited(club, sandbox, manager, client):
    """Issue 20: autofill moved from email to phone; a member whose External ID is an email was frozen ("not a
    valid phone number") on every edit, though the External ID was not being changed."""
    autofill.autofill_setting_change(template=club, source="email")
    member = issued(club, external_id="laura@example.com")
    autofill.autofill_setting_change(template=club, source="phone")
    client.force_login(manager)
    url = reverse("members:member_edit", args=[member.pk])
    posted = {"field_name": "Laura Loopy Jr", "field_email": "laura@example.com", "field_phone": "555 1234"}

    response = client.post(url, {**posted, "external_id": "laura@example.com"}, follow=True)

    body = response.content.decode()
    assert "Saved on SmartPages and here." in body and "not a valid phone number" not in body
    member.refresh_from_db()
    assert (member.display_name, member.external_id) == ("Laura Loopy Jr", "laura@example.com")
    assert upstream_values(sandbox, member)["name"] == "Laura Loopy Jr"
    # The disabled input posts nothing; the service is called with the stored External ID then too.
    passes.member_edit(member=member, values={**LAURA, "name": "Laura L."}, external_id=None, user=manager)
    # A new External ID is still checked against the current source.
    blank = issued(club, values={**LAURA, "name": "Other"})
    with pytest.raises(InvalidIdentity, match="not a valid phone number"):
        passes.member_edit(member=blank, values=LAURA, external_id="someone@example.com", user=manager)


# --- refresh ------------------------------------------------------------------------------------------------
def test_the_refresh_command_reads_what_changed_on_smartpages(club, sandbox):
    voided, redeemed, edited, same = (issued(club, {**LAURA, "name": n}) for n in ("Anna", "Björn", "Cecilía", "Dóra"))
    sandbox.change_pass(str(voided.pass_id), status="VOIDED")
    sandbox.change_pass(str(redeemed.pass_id), status="REDEEMED")
    sandbox.change_pass(str(edited.pass_id), values={"name": "Cecilía Ýr"})
    Member.objects.filter(pk=same.pk).update(refreshed_at="2020-01-01T00:00:00Z")
    sandbox.reset_counts()

    out = StringIO()
    call_command("refresh_members", "--json", stdout=out)

    assert json.loads(out.getvalue()) == {"status": "succeeded", "checked": 4, "changed": 3, "errors": 0}
    statuses = dict(Member.objects.values_list("display_name", "status"))
    assert statuses == {"Anna": "voided", "Björn": "redeemed", "Cecilía Ýr": "issued", "Dóra": "issued"}
    edited.refresh_from_db()
    assert edited.changes.get().changes == {"name": ["Cecilía", "Cecilía Ýr"]}
    assert voided.status_changes.last().reason.startswith("Changed on SmartPages")
    # Stalest first: the never-read members (in id order), then the one read in 2020.
    order = [path.rsplit("/", 1)[1] for path in sandbox.request_paths("GET", "/api/v1/pass/")]
    assert order == [str(m.pass_id) for m in (voided, redeemed, edited, same)]
    run = MemberRefreshRun.objects.get()
    assert (run.trigger, run.total, run.chunks_total, run.chunks_done) == ("command", 4, 1, 1)
    # A second run has nothing voided to read again; redeemed passes are still read (they may be voided).
    out = StringIO()
    call_command("refresh_members", "--json", "--template", str(club.pk), stdout=out)
    assert json.loads(out.getvalue()) == {"status": "succeeded", "checked": 3, "changed": 0, "errors": 0}


def test_a_pass_missing_upstream_is_an_error_of_the_run_not_a_failure(
    club, sandbox, settings, django_capture_on_commit_callbacks
):
    settings.MEMBER_REFRESH_CHUNK = 1
    issued(club)
    ghost = make_member(club, name="Ghost")  # a Pass ID SmartPages never made
    with django_capture_on_commit_callbacks(execute=True):
        run = refresh.member_refresh_run_start(trigger="command", inline=True)
    assert (run.status, run.checked, run.errors, run.chunks_total) == ("succeeded", 1, 1, 2)
    assert run.error_samples[0]["member"] == ghost.pk and "404" in run.error_samples[0]["error"]
    # The run reconciled the kept member count (the factory's member was written without counting it).
    assert TemplateMemberCount.objects.get(template=club).members == 2


def test_a_second_run_while_one_runs_is_recorded_as_skipped(club, sandbox):
    MemberRefreshRun.objects.create(trigger="beat", status="running")
    out = StringIO()
    with pytest.raises(Exception, match="still running"):
        call_command("refresh_members", "--json", stdout=out)
    assert json.loads(out.getvalue())["status"] == "skipped"


def test_without_redis_the_limiter_falls_back_to_a_local_rate_and_says_so(caplog):
    limiter = SharedRateLimiter(name="test", rate=1000, fallback_rate=20, redis_url="redis://127.0.0.1:1/0")
    began = time.monotonic()
    for _ in range(4):
        limiter.wait()
    # Four calls take at least three intervals of 1/20 s (the fallback), not of 1/1000 s (the shared rate).
    assert time.monotonic() - began >= 0.15
    assert "Redis unreachable" in caplog.text


def test_the_refresh_history_page_starts_a_run_for_a_manager_only(club, sandbox, manager, viewer, client):
    issued(club)
    client.force_login(viewer)
    assert client.post(reverse("members:refresh_now")).status_code == 403
    assert not MemberRefreshRun.objects.exists()
    assert "Refresh now" not in client.get(reverse("members:refresh_runs")).content.decode()
    client.force_login(manager)
    body = client.post(reverse("members:refresh_now"), follow=True).content.decode()
    assert "Refresh started: 1 members to read" in body
    run = MemberRefreshRun.objects.get()
    assert (run.trigger, run.triggered_by, run.total) == ("manual", manager, 1)


# --- bulk (inline here; the worker test runs it in a real worker) ----------------------------------------------
def test_a_bulk_void_records_each_members_outcome(club, sandbox, manager):
    live, pending = issued(club), make_member(club, name="Pending", status=Member.Status.PENDING)
    already = issued(club, {**LAURA, "name": "Void already"})
    passes.member_void(member=already, user=manager)
    action = bulk.member_bulk_request(action="void", member_ids=[live.pk, pending.pk, already.pk], user=manager)
    action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk))
    assert (action.status, action.total, action.done, action.succeeded, action.skipped, action.failed) == (
        "succeeded",
        3,
        3,
        1,
        2,
        0,
    )
    outcomes = dict(MemberBulkOutcome.objects.values_list("member_id", "outcome"))
    assert outcomes == {live.pk: "succeeded", pending.pk: "skipped", already.pk: "skipped"}
    assert next(p for p in sandbox.passes() if p["id"] == str(live.pass_id))["isVoided"] is True


def test_bulk_actions_and_edits_are_refused_to_a_viewer(club, sandbox, viewer, client):
    member = issued(club)
    client.force_login(viewer)
    assert client.post(reverse("members:member_bulk"), {"action": "void", "member": member.pk}).status_code == 403
    assert client.get(reverse("members:member_edit", args=[member.pk])).status_code == 403
    assert client.post(reverse("members:member_edit", args=[member.pk]), {"field_name": "X"}).status_code == 403
    assert not MemberBulkAction.objects.exists() and Member.objects.get().display_name == "Laura Loopy"
    # Export of ticked members is a read: allowed.
    response = client.post(reverse("members:member_export"), {"member": member.pk})
    assert b"Laura Loopy" in b"".join(response.streaming_content)


# --- autofill conflicts -------------------------------------------------------------------------------------
def test_a_manager_picks_who_keeps_the_external_id_and_the_others_are_voided(club, sandbox, manager, viewer, client):
    first = issued(club, {**LAURA, "name": "Percy One", "email": "percy@example.com"})
    second = issued(club, {**LAURA, "name": "Percy Two", "email": "percy@example.com"})
    autofill.autofill_setting_change(template=club, source="email")
    url = reverse("members:autofill_conflict_resolve", args=[club.pk])
    form = {"external_id": "percy@example.com", "keep": second.pk, "void": "1"}

    client.force_login(viewer)
    assert client.post(url, form).status_code == 403
    client.force_login(manager)
    page = client.get(reverse("members:autofill_settings", args=[club.pk]), {"preview": "1"}).content.decode()
    assert f'name="keep" value="{second.pk}"' in page
    asked = client.post(url, form).content.decode()  # voiding asks first, naming the pass it voids
    assert "Void 1 pass?" in asked and str(first.pass_id) in asked
    body = client.post(url, {**form, "confirm": "1"}, follow=True).content.decode()

    assert "keeps External ID “percy@example.com”; 1 other member left without it, 1 voided" in body
    first.refresh_from_db(), second.refresh_from_db()
    assert second.external_id == "percy@example.com" and first.external_id is None
    assert first.status == Member.Status.VOIDED and first.autofill_excluded
    assert not autofill.selectors.autofill_preview(template=club).conflicts
    # The next claim with that email finds the kept member instead of making a third.
    again = issuing.member_issue(
        template=club, values={**LAURA, "email": "percy@example.com"}, external_id="percy@example.com", source="link"
    )
    assert again.kind == issuing.IssueKind.ALREADY_ENROLLED and again.member.pk == second.pk
