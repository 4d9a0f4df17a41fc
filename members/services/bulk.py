"""Acting on many members at once: void them, or read them again from SmartPages.

A request records the action and one WAITING outcome row per member in one transaction, then hands the
action to a worker (after commit). The task works through the waiting rows in chunks, each upstream call
after the shared limiter (the refresh job's rate, shared by all workers), and writes each member's outcome
and the progress counts as it goes, beating the action's heartbeat from a thread; after RUN_SLICE_SECONDS it
hands the rest to a fresh task of itself. A task delivered twice finds the action
taken; one lost (the broker was away, the worker died) is sent again by the recovery sweep and continues with
the rows still waiting: no member is acted on twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.rate_limit import SharedRateLimiter
from background.recovery import MAX_ATTEMPTS, requeue_stale, resend_waiting, take
from templates_sync.client import SmartPagesClient, smartpages_client

from ..models import Member, MemberBulkAction, MemberBulkOutcome
from . import MemberError
from .passes import member_refresh, member_void
from .refresh import smartpages_rate_limiter

logger = logging.getLogger(__name__)

BULK_TASK = "members.member_bulk_run"
# One action holds at most this many members: its outcome rows are written in the request.
BULK_MAX = 100_000
BULK_CHUNK = 200


def member_bulk_request(
    *, action: str, members: QuerySet[Member] | None = None, member_ids: Iterable[int] = (), user
) -> MemberBulkAction:
    """Record a bulk action over the chosen members (ids ticked on the page, or every member a filter
    matches) and queue it. Raises MemberError for an unknown action, an empty or too large selection."""
    if action not in MemberBulkAction.Action.values:
        raise MemberError(f"Unknown action “{action}”.")
    if members is None:
        members = Member.objects.filter(pk__in=list(member_ids))
    ids = list(members.order_by().values_list("id", flat=True)[: BULK_MAX + 1])
    if not ids:
        raise MemberError("No members are selected.")
    if len(ids) > BULK_MAX:
        raise MemberError(f"More than {BULK_MAX:,} members are selected; narrow the filter and run it in parts.")
    ids.sort()
    with transaction.atomic():
        bulk = MemberBulkAction.objects.create(action=action, total=len(ids), requested_by=user)
        MemberBulkOutcome.objects.bulk_create(
            (MemberBulkOutcome(action=bulk, member_id=member_id) for member_id in ids), batch_size=5000
        )
        _send(bulk)
    return bulk


def member_bulk_run(
    *, bulk: MemberBulkAction, client: SmartPagesClient | None = None, limiter: SharedRateLimiter | None = None
) -> MemberBulkAction:
    """Act on the members still WAITING in this action, recording each outcome, for RUN_SLICE_SECONDS; then
    hand the action back and send its task again for the rest. Only the worker that took the action from
    QUEUED acts: a copy of the task delivered twice finds it taken and returns; a worker the recovery sweep
    gave up on (its heartbeat thread stopped: the process died) stops at its next check."""
    beat = take(bulk, started_at=Coalesce(F("started_at"), Value(timezone.now())))
    if beat is None:
        bulk.refresh_from_db()
        return bulk
    waiting = MemberBulkOutcome.objects.filter(action=bulk, outcome=MemberBulkOutcome.Outcome.WAITING)
    if bulk.attempt > MAX_ATTEMPTS:
        _give_up(bulk=bulk, waiting=waiting, beat=beat)
        bulk.refresh_from_db()
        return bulk
    limiter = limiter or smartpages_rate_limiter()
    # A bounded share of the work per task (RUN_SLICE_SECONDS), so a task of the largest action ends long before
    # the soft time limit; the rest goes to a fresh task of itself, under the same attempt.
    slice_ends = time.monotonic() + settings.RUN_SLICE_SECONDS
    with beat.keep_beating(), smartpages_client(client) as smartpages:
        for n, row in enumerate(_waiting_rows(waiting)):
            if not beat():
                bulk.refresh_from_db()
                return bulk  # taken over: the worker holding it now goes on
            if n and time.monotonic() >= slice_ends:  # each task acts on one member at least
                break
            _member_act(row=row, action=bulk.action, client=smartpages, limiter=limiter)
        else:
            beat.mine.update(status=MemberBulkAction.Status.SUCCEEDED, finished_at=timezone.now())
            bulk.refresh_from_db()
            return bulk
    # Handed back once the heartbeat thread has stopped, so that it never beats for the task that goes on.
    with transaction.atomic():
        if beat.hand_back():
            _send(bulk)
    bulk.refresh_from_db()
    return bulk


def _waiting_rows(waiting: QuerySet[MemberBulkOutcome]) -> Iterator[MemberBulkOutcome]:
    while chunk := list(waiting.select_related("member__template").order_by("id")[:BULK_CHUNK]):
        yield from chunk


def member_bulk_actions_sweep() -> int:
    """A sweep (background.recovery): actions left queued because their task was lost, and actions whose
    worker stopped beating, are sent again; each goes on from its members still waiting."""
    actions = MemberBulkAction.objects.all()
    return resend_waiting(actions, _send) + requeue_stale(actions, _send)


def _send(bulk: MemberBulkAction) -> None:
    enqueue_after_commit(BULK_TASK, bulk.pk)


def _give_up(*, bulk: MemberBulkAction, waiting: QuerySet[MemberBulkOutcome], beat) -> None:
    """A worker died in this action MAX_ATTEMPTS times: the members still waiting fail, with the reason."""
    message = f"Not done: a worker stopped {MAX_ATTEMPTS} times while running this action."
    with transaction.atomic():
        left = waiting.update(outcome=MemberBulkOutcome.Outcome.FAILED, message=message)
        beat.mine.update(
            status=MemberBulkAction.Status.FAILED,
            finished_at=timezone.now(),
            done=F("done") + left,
            failed=F("failed") + left,
            error=f"{message} {left} members were not acted on; select them again to retry.",
        )


def _member_act(*, row: MemberBulkOutcome, action: str, client: SmartPagesClient, limiter: SharedRateLimiter) -> None:
    member = row.member
    void = action == MemberBulkAction.Action.VOID
    if void and row.sent_at is not None and member.status == Member.Status.ISSUED:
        # An attempt whose worker died sent this void and wrote nothing after: SmartPages may hold the pass
        # voided already. Read it first, so that a void that went through is never sent a second time.
        limiter.wait()
        try:
            member_refresh(member=member, client=client)
        except MemberError as exc:
            _record(row=row, outcome=MemberBulkOutcome.Outcome.FAILED, message=str(exc))
            return
        if member.status == Member.Status.VOIDED:
            _record(row=row, outcome=MemberBulkOutcome.Outcome.SUCCEEDED)
            return
    skip = _skip_reason(member=member, action=action)
    if skip:
        outcome, message = MemberBulkOutcome.Outcome.SKIPPED, skip
    else:
        limiter.wait()
        try:
            if void:
                MemberBulkOutcome.objects.filter(pk=row.pk).update(sent_at=timezone.now())
                member_void(member=member, user=row.action.requested_by, client=client)
            else:
                member_refresh(member=member, client=client)
        except MemberError as exc:
            outcome, message = MemberBulkOutcome.Outcome.FAILED, str(exc)
        else:
            outcome, message = MemberBulkOutcome.Outcome.SUCCEEDED, ""
    _record(row=row, outcome=outcome, message=message)


def _record(*, row: MemberBulkOutcome, outcome: str, message: str = "") -> None:
    counter = str(outcome)  # the action's counter of the same name
    with transaction.atomic():
        # Only a row still waiting: a second copy of the task that got here first keeps its outcome.
        if MemberBulkOutcome.objects.filter(pk=row.pk, outcome=MemberBulkOutcome.Outcome.WAITING).update(
            outcome=outcome, message=message
        ):
            MemberBulkAction.objects.filter(pk=row.action_id).update(done=F("done") + 1, **{counter: F(counter) + 1})


def _skip_reason(*, member: Member, action: str) -> str:
    if member.pass_id is None:
        return "No pass on SmartPages yet."
    if action == MemberBulkAction.Action.VOID and member.status != Member.Status.ISSUED:
        return f"Not voided: the pass is {member.get_status_display().lower()}."
    return ""
