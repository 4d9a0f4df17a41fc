"""member_issue, member_void and member_refresh against the sandbox over real HTTP."""

import uuid

import pytest
from django.utils import timezone

from members import services
from members.models import Member
from members.services import issuing, passes
from portal.celery import app as celery_app
from sandbox import DEMO_TEMPLATE_ID, Faults
from templates_sync.client import client_from_settings

from .factories import mirror_template

LAURA = {"name": "Laura Loopy", "email": "Laura.Loopy@Example.COM ", "phone": "555 1234"}


def issue_result(template, values=LAURA, external_id=None, **kwargs):
    return issuing.member_issue(template=template, values=values, external_id=external_id, source="link", **kwargs)


def issue(template, values=LAURA, external_id=None, **kwargs):
    return issue_result(template, values, external_id, **kwargs).member


def test_issuing_creates_the_pass_upstream_and_mirrors_it(club, sandbox):
    member = issue(club, external_id="laura.loopy@example.com", source_batch_id=7, source_row=3)

    member.refresh_from_db()
    upstream = sandbox.passes(DEMO_TEMPLATE_ID)
    assert len(upstream) == 1
    assert member.status == Member.Status.ISSUED and str(member.pass_id) == upstream[0]["id"]
    assert upstream[0]["externalIdentifier"] == "laura.loopy@example.com"
    # Values are stored and sent normalised, and copied for search.
    assert {f["identifier"]: f["value"] for f in upstream[0]["inputFields"]} == {
        "name": "Laura Loopy",
        "email": "laura.loopy@example.com",
        "phone": "+3545551234",
    }
    assert (member.display_name, member.email, member.phone) == (
        "Laura Loopy",
        "laura.loopy@example.com",
        "+3545551234",
    )
    assert (member.source_batch_id, member.source_row) == (7, 3)
    assert member.upstream["id"] == upstream[0]["id"]
    assert [(c.old, c.new) for c in member.status_changes.all()] == [("", "pending"), ("pending", "issued")]


def test_a_second_issue_with_the_same_external_id_returns_the_first_member_without_calling_upstream(club, sandbox):
    first = issue_result(club, external_id="laura.loopy@example.com")
    posts = sandbox.request_count("POST")

    second = issue_result(club, values={**LAURA, "name": "Someone Else"}, external_id="laura.loopy@example.com")

    assert second.member.pk == first.member.pk and second.member.pass_id == first.member.pass_id
    assert second.kind == issuing.IssueKind.ALREADY_ENROLLED and first.kind == issuing.IssueKind.CREATED
    assert sandbox.request_count("POST") == posts
    assert Member.objects.count() == 1


def test_without_an_external_id_every_issue_makes_a_new_member(club, sandbox):
    first, second = issue(club), issue(club)
    assert first.pk != second.pk and first.pass_id != second.pass_id
    assert len(sandbox.passes(DEMO_TEMPLATE_ID)) == 2


def test_invalid_values_are_refused_with_reasons_and_nothing_is_made(club, sandbox):
    with pytest.raises(services.InvalidMemberValues) as refused:
        issue(club, values={"name": "", "email": "not-an-email"})
    assert set(refused.value.errors) == {"name", "email"}
    assert "Nafn / Name is required." in refused.value.errors["name"]
    assert Member.objects.count() == 0 and sandbox.request_count("POST") == 0


def test_a_template_that_cannot_issue_is_refused_with_its_reason(club, sandbox):
    club.disable_issue = True
    with pytest.raises(services.IssueRefused, match="disabled"):
        issue(club)
    assert Member.objects.count() == 0


def test_an_external_id_taken_upstream_marks_the_member_failed_with_a_visible_conflict(club, sandbox):
    with client_from_settings() as client:
        client.create_pass(
            {
                "passTemplateId": DEMO_TEMPLATE_ID,
                "inputFields": [
                    {"identifier": "name", "value": "X"},
                    {"identifier": "email", "value": "x@example.com"},
                ],
                "externalIdentifier": "taken",
            }
        )

    member = issue(club, external_id="taken")

    member.refresh_from_db()
    assert member.status == Member.Status.FAILED and member.upstream_conflict
    assert "“taken”" in member.failure_reason and member.pass_id is None


def test_an_upstream_refusal_marks_the_member_failed_with_the_reason(club, sandbox):
    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=True)  # the mirror has not seen this yet
    member = issue(club)
    member.refresh_from_db()
    assert member.status == Member.Status.FAILED and not member.upstream_conflict
    assert "disabled" in member.failure_reason
    assert member.status_changes.last().new == "failed"


def test_upstream_down_leaves_the_member_pending_and_a_retry_issues_it(club, sandbox):
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    member = issue(club, external_id="laura.loopy@example.com")
    member.refresh_from_db()
    assert member.status == Member.Status.PENDING and member.pass_id is None
    assert member.issue_attempts == 1 and "503" in member.last_error

    sandbox.faults = Faults()
    issuing.member_issue_retry(member=member)
    member.refresh_from_db()
    assert member.status == Member.Status.ISSUED and member.issue_attempts == 2 and member.last_error == ""
    assert [p["id"] for p in sandbox.passes(DEMO_TEMPLATE_ID)] == [str(member.pass_id)]


def test_a_retry_after_a_lost_reply_adopts_the_pass_its_first_attempt_made(club, sandbox):
    member = issue(club, external_id="laura.loopy@example.com")
    # As if the first POST arrived but its reply never came back: the member is still pending locally.
    pass_id = member.pass_id
    Member.objects.filter(pk=member.pk).update(status="pending", pass_id=None)
    member.refresh_from_db()

    issuing.member_issue_retry(member=member)

    member.refresh_from_db()
    assert member.status == Member.Status.ISSUED and member.pass_id == pass_id
    assert len(sandbox.passes(DEMO_TEMPLATE_ID)) == 1


def test_voiding_voids_the_pass_upstream_and_records_who(club, sandbox, manager):
    member = issue(club)
    passes.member_void(member=member, user=manager)
    member.refresh_from_db()
    assert member.status == Member.Status.VOIDED
    assert sandbox.passes(DEMO_TEMPLATE_ID)[0]["isVoided"] is True
    change = member.status_changes.last()
    assert (change.old, change.new, change.by) == ("issued", "voided", manager)
    with pytest.raises(services.MemberError, match="Only an issued pass"):
        passes.member_void(member=member, user=manager)


def test_refresh_reads_a_pass_voided_on_smartpages(club, sandbox):
    member = issue(club)
    with client_from_settings() as client:
        client.update_pass(str(member.pass_id), {"isVoided": True})
    passes.member_refresh(member=member)
    member.refresh_from_db()
    assert member.status == Member.Status.VOIDED and member.upstream["status"] == "VOIDED"


def test_refresh_of_an_unknown_pass_says_so_without_raw_error_text(club, sandbox):
    member = issue(club)
    Member.objects.filter(pk=member.pk).update(pass_id=uuid.uuid4())
    member.refresh_from_db()
    with pytest.raises(services.MemberError) as refused:
        passes.member_refresh(member=member)
    assert "404" not in str(refused.value) and "may have been deleted" in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_concurrent_issues_with_one_external_id_make_one_member_and_one_pass(sandbox, run_at_a_barrier):
    club = mirror_template()

    def claim(barrier):
        barrier.wait()
        return issue_result(club, external_id="laura.loopy@example.com")

    results, errors = run_at_a_barrier(8, claim)

    assert errors == []
    assert Member.objects.count() == 1 and len({r.member.pk for r in results}) == 1
    assert sum(r.kind == issuing.IssueKind.CREATED for r in results) == 1
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db(transaction=True)
def test_two_retries_racing_for_one_attempt_post_once_and_only_the_winner_reschedules(sandbox, run_at_a_barrier):
    club = mirror_template()
    sandbox.faults = Faults(error_rate=1.0, scope="passes")  # still down: the member stays pending
    member = issue(club)
    assert (member.status, member.issue_attempts) == (Member.Status.PENDING, 1)
    posts = sandbox.request_count("POST", "/api/v1/pass")

    def retry(barrier):
        copy = Member.objects.select_related("template").get(pk=member.pk)  # a task and its redelivered twin
        barrier.wait()
        return issuing.member_issue_retry(member=copy)

    results, errors = run_at_a_barrier(2, retry)
    assert errors == []

    assert sorted(r.attempted for r in results) == [False, True]
    assert sandbox.request_count("POST", "/api/v1/pass") == posts + 1
    assert Member.objects.get(pk=member.pk).issue_attempts == 2


def test_a_retry_task_that_arrives_after_its_chain_moved_on_neither_posts_nor_reschedules(
    club, sandbox, monkeypatch, django_capture_on_commit_callbacks
):
    from members import tasks

    sent = []  # what reaches the broker: (task, arguments, options)
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=(), **options: sent.append((name, args, options)))
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    member = issue(club)  # attempt 1

    assert tasks.member_issue_retry.run(member.pk, 1) == Member.Status.PENDING  # attempt 2
    # No delayed message anywhere: the next attempt waits in the row, with backoff after attempt 2.
    assert sent == []
    member.refresh_from_db()
    delay = (member.next_attempt_at - timezone.now()).total_seconds()
    assert issuing.issue_retry_delay(2) - 2 < delay <= issuing.issue_retry_delay(2)
    posts = sandbox.request_count("POST", "/api/v1/pass")

    # A redelivered copy of the first task, after the chain made attempt 2.
    assert tasks.member_issue_retry.run(member.pk, 1) == Member.Status.PENDING
    assert sent == [] and sandbox.request_count("POST", "/api/v1/pass") == posts
    assert Member.objects.get(pk=member.pk).issue_attempts == 2

    # Once due, the sweep sends it, once, without a countdown, whatever the number of sweeps.
    Member.objects.filter(pk=member.pk).update(next_attempt_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert issuing.member_issue_retries_send_due() == 1
        assert issuing.member_issue_retries_send_due() == 0
    assert [(name, tuple(args), options.get("countdown")) for name, args, options in sent] == [
        (issuing.RETRY_TASK, (member.pk, 2), None)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_refused_member_claimed_again_by_many_at_once_is_issued_once(sandbox, run_at_a_barrier):
    club = mirror_template()
    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=True)
    member = issue(club, external_id="laura.loopy@example.com")
    assert member.status == Member.Status.FAILED
    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=False)
    posts = sandbox.request_count("POST", "/api/v1/pass")

    def claim_again(barrier):
        copy = Member.objects.select_related("template").get(pk=member.pk)
        barrier.wait()
        return issuing.member_reissue_failed(member=copy)

    _results, errors = run_at_a_barrier(6, claim_again)
    assert errors == []

    member.refresh_from_db()
    assert member.status == Member.Status.ISSUED and member.failure_reason == ""
    assert sandbox.request_count("POST", "/api/v1/pass") == posts + 1
    assert [p["id"] for p in sandbox.passes(DEMO_TEMPLATE_ID)] == [str(member.pass_id)]
    assert [(c.old, c.new) for c in member.status_changes.all()] == [
        ("", "pending"),
        ("pending", "failed"),
        ("failed", "pending"),
        ("pending", "issued"),
    ]
