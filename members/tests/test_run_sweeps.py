"""The recovery sweep of bulk actions and refresh runs, in this process against the sandbox over HTTP: what it
sends again, that it sends it once, and that the run sent again goes on without repeating what was done. (The
same with real workers killed mid-run: test_run_recovery.py.)"""

from datetime import timedelta

import pytest
from django.utils import timezone

from members.models import Member, MemberBulkAction, MemberBulkOutcome, MemberRefreshChunk, MemberRefreshRun
from members.services import bulk, issuing, refresh
from templates_sync import recovery

from .factories import mirror_template

pytestmark = pytest.mark.django_db

PASSES = "/api/v1/pass/"


@pytest.fixture
def club(sandbox):
    return mirror_template()


def issued(template, n: int) -> Member:
    values = {"name": f"Holder {n}", "email": f"holder{n}@example.is"}
    member = issuing.member_issue(template=template, values=values, external_id=None, source="link").member
    assert member.status == Member.Status.ISSUED
    return member


def long_ago() -> timezone.datetime:
    return timezone.now() - timedelta(minutes=10)


def test_a_bulk_action_whose_worker_died_is_queued_again_once_and_goes_on_from_the_waiting_members(
    club, sandbox, manager, settings, django_capture_on_commit_callbacks
):
    done, in_flight, waiting = (issued(club, n) for n in range(3))
    action = bulk.member_bulk_request(action="void", member_ids=[done.pk, in_flight.pk, waiting.pk], user=manager)
    # A worker took it, voided the first member, sent the second one's void (SmartPages did it) and died.
    assert recovery.take(action) is not None
    bulk._member_act(row=MemberBulkOutcome.objects.get(member=done), action="void", client=None, limiter=_no_wait())
    MemberBulkOutcome.objects.filter(member=in_flight).update(sent_at=timezone.now())
    sandbox.change_pass(str(in_flight.pass_id), status="VOIDED")
    MemberBulkAction.objects.filter(pk=action.pk).update(heartbeat_at=long_ago())
    sandbox.reset_counts()

    with django_capture_on_commit_callbacks(execute=False) as sends:
        assert bulk.member_bulk_actions_sweep() == 1
        assert bulk.member_bulk_actions_sweep() == 0  # its heartbeat restarted: not sent twice
    assert len(sends) == 1
    assert MemberBulkAction.objects.get(pk=action.pk).status == "queued"

    action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk), limiter=_no_wait())
    assert (action.status, action.attempt, action.done, action.succeeded, action.failed) == ("succeeded", 2, 3, 3, 0)
    # The in-flight member's pass was read, not voided again; only the waiting member was voided now.
    assert sandbox.request_paths("PUT", PASSES) == [f"{PASSES}{waiting.pass_id}"]
    assert sandbox.request_paths("GET", PASSES) == [f"{PASSES}{in_flight.pass_id}"]
    assert set(Member.objects.values_list("status", flat=True)) == {"voided"}


def test_a_worker_the_sweep_gave_up_on_stops_at_its_next_heartbeat(club, manager):
    action = bulk.member_bulk_request(action="refresh", member_ids=[issued(club, 0).pk], user=manager)
    beat = recovery.take(action)
    assert beat(force=True)
    MemberBulkAction.objects.filter(pk=action.pk).update(heartbeat_at=long_ago())
    assert recovery.requeue_stale(MemberBulkAction.objects.all(), lambda row: None) == 1
    assert not beat(force=True)  # no longer this worker's: it stops
    # The copy sent again takes it under the next attempt.
    assert recovery.take(MemberBulkAction.objects.get(pk=action.pk)) is not None
    assert MemberBulkAction.objects.get(pk=action.pk).attempt == 2


def test_the_chunks_of_a_silent_refresh_run_are_sent_again_once_and_each_member_counted_once(
    club, sandbox, settings, django_capture_on_commit_callbacks
):
    settings.MEMBER_REFRESH_CHUNK = 2
    members = [issued(club, n) for n in range(6)]
    sandbox.change_pass(str(members[5].pass_id), status="REDEEMED")
    # Recorded and sent while the broker was away: the sends never left (this test's transaction never commits).
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    first, second, third = MemberRefreshChunk.objects.filter(run=run).order_by("pk")
    # A worker took the first chunk and died; the other two chunks' messages were lost.
    assert recovery.take(first) is not None
    MemberRefreshChunk.objects.filter(pk=first.pk).update(heartbeat_at=long_ago())
    MemberRefreshChunk.objects.filter(pk__in=[second.pk, third.pk]).update(queued_at=long_ago())
    MemberRefreshRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago())

    with django_capture_on_commit_callbacks(execute=False) as sends:
        assert refresh.member_refresh_runs_sweep() == 3
        assert refresh.member_refresh_runs_sweep() == 0  # each sent once per stale period
    assert len(sends) == 3

    for chunk in (first, second, third):
        refresh.member_refresh_chunk(chunk_id=chunk.pk)
    run.refresh_from_db()
    assert (run.status, run.total, run.checked, run.changed, run.errors, run.chunks_done) == (
        "succeeded",
        6,
        6,
        1,
        0,
        3,
    )
    assert MemberRefreshChunk.objects.get(pk=first.pk).attempt == 2
    refresh.member_refresh_chunk(chunk_id=third.pk)  # a late duplicate of a chunk's task changes nothing
    assert MemberRefreshRun.objects.get(pk=run.pk).checked == 6


def _no_wait():
    from templates_sync.rate_limit import SharedRateLimiter

    return SharedRateLimiter(name="sweep-test", rate=10_000, fallback_rate=10_000, redis_url=None)


def test_work_a_worker_died_in_every_time_gives_up_with_the_reason(club, sandbox, manager, settings):
    members = [issued(club, n) for n in range(2)]
    action = bulk.member_bulk_request(action="void", member_ids=[m.pk for m in members], user=manager)
    MemberBulkAction.objects.filter(pk=action.pk).update(attempt=recovery.MAX_ATTEMPTS)
    settings.MEMBER_REFRESH_CHUNK = 1
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    doomed = MemberRefreshChunk.objects.filter(run=run).order_by("pk").first()
    MemberRefreshChunk.objects.filter(pk=doomed.pk).update(attempt=recovery.MAX_ATTEMPTS)
    sandbox.reset_counts()

    action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk))
    assert (action.status, action.done, action.failed) == ("failed", 2, 2)
    assert "a worker stopped 5 times" in action.error
    assert set(MemberBulkOutcome.objects.values_list("outcome", flat=True)) == {"failed"}
    assert sandbox.request_count("PUT") == 0

    for chunk in MemberRefreshChunk.objects.filter(run=run):
        refresh.member_refresh_chunk(chunk_id=chunk.pk)
    run.refresh_from_db()
    assert (run.status, run.total, run.checked, run.errors) == ("succeeded", 2, 1, 1)
    assert "a worker stopped 5 times" in run.error_samples[0]["error"]
    assert sandbox.request_count("GET") == 1
