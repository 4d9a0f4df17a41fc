"""The recovery sweep of bulk actions and refresh runs, in this process against the sandbox over HTTP: what it
sends again, that it sends it once, and that the run sent again goes on without repeating what was done. (The
same with real workers killed mid-run: test_run_recovery.py.)"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from background import recovery
from members.models import Member, MemberBulkAction, MemberBulkOutcome, MemberRefreshChunk, MemberRefreshRun
from members.services import bulk, issuing, refresh

pytestmark = pytest.mark.django_db

PASSES = "/api/v1/pass/"


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
    from background.rate_limit import SharedRateLimiter

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


def test_a_bulk_action_running_since_before_heartbeats_existed_is_queued_again(club, manager, settings):
    """Rows that were running when the heartbeat column came have none: they are stale once they started (a
    chunk: was queued) RUN_STALE_SECONDS ago; a recent one is left to its worker."""
    old, recent = (
        bulk.member_bulk_request(action="refresh", member_ids=[issued(club, n).pk], user=manager) for n in range(2)
    )
    MemberBulkAction.objects.filter(pk=old.pk).update(status="running", attempt=1, started_at=long_ago())
    MemberBulkAction.objects.filter(pk=recent.pk).update(status="running", attempt=1, started_at=timezone.now())
    MemberBulkAction.objects.update(heartbeat_at=None)
    settings.MEMBER_REFRESH_CHUNK = 1
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    chunk = MemberRefreshChunk.objects.filter(run=run).first()
    MemberRefreshChunk.objects.filter(pk=chunk.pk).update(status="running", attempt=1, heartbeat_at=None)
    MemberRefreshChunk.objects.filter(pk=chunk.pk).update(queued_at=long_ago())

    assert recovery.requeue_stale(MemberBulkAction.objects.all(), lambda row: None) == 1
    assert dict(MemberBulkAction.objects.values_list("pk", "status")) == {old.pk: "queued", recent.pk: "running"}
    assert recovery.requeue_stale(MemberRefreshChunk.objects.all(), lambda row: None) == 1
    assert MemberRefreshChunk.objects.get(pk=chunk.pk).status == "queued"
    action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=old.pk), limiter=_no_wait())
    assert (action.status, action.attempt, action.done) == ("succeeded", 2, 1)


def test_work_left_queued_is_sent_again_once_per_period_however_long_it_waits(
    club, manager, settings, django_capture_on_commit_callbacks
):
    from members.models import AutofillBackfill
    from members.services import autofill

    action = bulk.member_bulk_request(action="refresh", member_ids=[issued(club, 0).pk], user=manager)
    backfill = AutofillBackfill.objects.create(template=club)
    MemberBulkAction.objects.filter(pk=action.pk).update(queued_at=long_ago())
    AutofillBackfill.objects.filter(pk=backfill.pk).update(queued_at=long_ago())

    with django_capture_on_commit_callbacks(execute=False) as sends:
        assert bulk.member_bulk_actions_sweep() == 1
        assert autofill.autofill_backfills_resend_queued() == 1
        assert bulk.member_bulk_actions_sweep() == 0  # sent a moment ago: not again until a period has passed
        assert autofill.autofill_backfills_resend_queued() == 0
    assert len(sends) == 2
    later = timezone.now() - timedelta(seconds=settings.SWEEP_OVERDUE_AFTER + 1)
    MemberBulkAction.objects.filter(pk=action.pk).update(heartbeat_at=later)
    with django_capture_on_commit_callbacks(execute=False) as sends:
        assert bulk.member_bulk_actions_sweep() == 1  # still waiting a period later: sent once more
    assert len(sends) == 1


def test_a_bulk_action_works_in_slices_each_handed_on_without_counting_an_attempt(
    club, sandbox, manager, settings, django_capture_on_commit_callbacks
):
    """Each task stops after RUN_SLICE_SECONDS (here: after its first member), hands the action back queued
    under the same attempt and sends itself again; the action never runs into the task time limit, and the
    give-up after MAX_ATTEMPTS counts only workers that died."""
    settings.RUN_SLICE_SECONDS = 0
    members = [issued(club, n) for n in range(recovery.MAX_ATTEMPTS + 2)]
    action = bulk.member_bulk_request(action="void", member_ids=[m.pk for m in members], user=manager)
    sandbox.reset_counts()
    for n in range(1, len(members)):
        with django_capture_on_commit_callbacks(execute=False) as sends:
            action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk), limiter=_no_wait())
        # Queued under attempt 0 again: the next take goes on as attempt 1 (the page says no worker stopped).
        assert (action.status, action.attempt, action.done) == ("queued", 0, n)
        assert len(sends) == 1  # its own next task
    action = bulk.member_bulk_run(bulk=MemberBulkAction.objects.get(pk=action.pk), limiter=_no_wait())
    assert (action.status, action.attempt, action.done, action.succeeded) == ("succeeded", 1, 7, 7)
    assert sandbox.request_count("PUT") == len(members)


def test_a_refresh_chunk_out_of_time_hands_its_unread_members_to_a_chunk_of_their_own(
    club, sandbox, settings, django_capture_on_commit_callbacks
):
    settings.RUN_SLICE_SECONDS = 0
    settings.MEMBER_REFRESH_CHUNK = 3
    members = [issued(club, n) for n in range(3)]
    sandbox.change_pass(str(members[2].pass_id), status="REDEEMED")
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    with django_capture_on_commit_callbacks(execute=False) as sends:
        refresh.member_refresh_chunk(chunk_id=MemberRefreshChunk.objects.get(run=run).pk)
    assert len(sends) == 1
    run.refresh_from_db()
    assert (run.status, run.checked, run.chunks_total, run.chunks_done) == ("running", 1, 2, 1)
    while chunk := MemberRefreshChunk.objects.filter(run=run, status="queued").first():
        refresh.member_refresh_chunk(chunk_id=chunk.pk)
    run.refresh_from_db()
    assert (run.status, run.total, run.checked, run.changed, run.chunks_total, run.chunks_done) == (
        "succeeded",
        3,
        3,
        1,
        3,
        3,
    )
    assert sandbox.request_count("GET", PASSES) == 3  # each member read once


def test_members_a_dead_attempt_found_changed_count_as_changed_when_their_chunk_runs_again(club, sandbox):
    from members.services.passes import member_apply_pass
    from templates_sync.client import client_from_settings

    members = [issued(club, n) for n in range(3)]
    sandbox.change_pass(str(members[0].pass_id), status="REDEEMED")
    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    chunk = MemberRefreshChunk.objects.get(run=run)
    # A worker took the chunk, read the first member (changed: recorded in its history) and died.
    assert recovery.take(chunk) is not None
    with client_from_settings() as client:
        assert member_apply_pass(member=members[0], reply=client.get_pass(str(members[0].pass_id)))
    MemberRefreshChunk.objects.filter(pk=chunk.pk).update(heartbeat_at=long_ago())
    assert recovery.requeue_stale(MemberRefreshChunk.objects.all(), lambda row: None) == 1

    refresh.member_refresh_chunk(chunk_id=chunk.pk)
    run.refresh_from_db()
    assert (run.status, run.checked, run.changed, run.errors) == ("succeeded", 3, 1, 0)


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_keeps_a_busy_worker_alive_and_tells_it_when_it_was_taken_over(club, manager):
    """Committed rows, as a worker has them: the thread beats on a connection of its own while the worker is
    busy (no call of the heartbeat here), and reports the take-over the worker then stops at."""
    action = bulk.member_bulk_request(action="refresh", member_ids=[issued(club, 0).pk], user=manager)
    beat = recovery.take(action)
    beat.every = 0.05
    with beat.keep_beating():
        MemberBulkAction.objects.filter(pk=action.pk).update(heartbeat_at=long_ago())
        time.sleep(0.5)  # busy, say in a slow SmartPages call
        assert MemberBulkAction.objects.get(pk=action.pk).heartbeat_at > timezone.now() - timedelta(seconds=1)
        assert recovery.requeue_stale(MemberBulkAction.objects.all(), lambda row: None, stale_seconds=1) == 0
        assert beat()
        # Taken over all the same (its process lost the database for longer than RUN_STALE_SECONDS, say).
        MemberBulkAction.objects.filter(pk=action.pk).update(status="queued", attempt=2)
        time.sleep(0.5)
        assert not beat()  # the worker stops at its next check
    assert MemberBulkAction.objects.get(pk=action.pk).status == "queued"


@pytest.mark.django_db(transaction=True)  # autocommit, as a worker runs: each write commits on its own
def test_a_take_whose_second_write_fails_leaves_the_row_queued_for_the_task_sent_again(club, manager):
    # A connection killed between taking the row and beating for what beats with it: the worker gives up on the
    # row and sends its task again, which must find the row still queued (not running under nobody).
    from django.db import DatabaseError
    from django.db.models.expressions import RawSQL

    action = bulk.member_bulk_request(action="refresh", member_ids=[issued(club, 0).pk], user=manager)
    failing = MemberBulkAction.objects.filter(pk__gt=RawSQL("SELECT 1 / 0", []))  # PostgreSQL refuses it
    with pytest.raises(DatabaseError):
        recovery.take(action, also=failing)
    assert MemberBulkAction.objects.get(pk=action.pk).status == "queued"
    assert recovery.take(MemberBulkAction.objects.get(pk=action.pk)) is not None
    assert MemberBulkAction.objects.get(pk=action.pk).attempt == 1
