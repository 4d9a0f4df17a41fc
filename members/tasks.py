"""Celery entry points for members: thin, they take ids and call a service."""

import logging

from celery import shared_task

from .models import AutofillBackfill, Member, MemberBulkAction
from .services import autofill, bulk, issuing, refresh

logger = logging.getLogger(__name__)


@shared_task(name="members.autofill_backfill")
def autofill_backfill(backfill_id: int) -> str:
    backfill = AutofillBackfill.objects.select_related("template").filter(pk=backfill_id).first()
    if backfill is None:
        return "missing"
    return autofill.autofill_backfill_run(backfill=backfill).status


@shared_task(name="members.member_issue_retry")
def member_issue_retry(member_id: int, attempts_so_far: int | None = None) -> str:
    """Try a pending member's pass again; while SmartPages stays unreachable, come back later with backoff.

    Only a run that made the attempt schedules the next one. A run that lost the attempt to another (a
    redelivered copy of this task, or the stale sweep) leaves the scheduling to that one, so one member
    keeps one chain of retries; the service gives up (member failed, with the reason) after
    ISSUE_MAX_ATTEMPTS. `attempts_so_far` is the count the scheduling run left: a copy that arrives after
    the chain moved on finds a different count and does nothing. (None: a task queued before it was
    passed; the attempt compare-and-set alone then decides.)
    """
    member = Member.objects.select_related("template").filter(pk=member_id).first()
    if member is None:
        return "missing"
    # A retry that must wait again records its next time in the row; the recovery sweep sends it when due.
    return issuing.member_issue_retry(member=member, expected_attempts=attempts_so_far).member.status


@shared_task(name="members.member_refresh_start")
def member_refresh_start(trigger: str = "beat") -> str:
    """Beat's entry: start a refresh run; its chunks go to the workers as `member_refresh_chunk` tasks."""
    return refresh.member_refresh_run_start(trigger=trigger).status


@shared_task(name="members.member_refresh_chunk")
def member_refresh_chunk(chunk_id: int) -> None:
    refresh.member_refresh_chunk(chunk_id=chunk_id)


@shared_task(name="members.member_bulk_run")
def member_bulk_run(bulk_id: int) -> str:
    bulk_action = MemberBulkAction.objects.filter(pk=bulk_id).first()
    if bulk_action is None:
        return "missing"
    return bulk.member_bulk_run(bulk=bulk_action).status
