"""Celery entry points for members: thin, they take ids and call a service."""
import logging

from celery import shared_task

from .services import autofill, issuing
from .models import AutofillBackfill, Member

logger = logging.getLogger(__name__)


@shared_task(name="members.autofill_backfill")
def autofill_backfill(backfill_id: int) -> str:
    backfill = AutofillBackfill.objects.select_related("template").filter(pk=backfill_id).first()
    if backfill is None:
        return "missing"
    return autofill.autofill_backfill_run(backfill=backfill).status


@shared_task(name="members.resend_queued_backfills")
def resend_queued_backfills() -> int:
    """Beat, every SWEEP_INTERVAL: backfills left queued because their task could not be sent are sent again."""
    return autofill.autofill_backfills_resend_queued()


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
    retry = issuing.member_issue_retry(member=member, expected_attempts=attempts_so_far)
    if retry.retry_later:
        issuing.member_retry_later(member=retry.member)
    return retry.member.status


@shared_task(name="members.retry_stale_pending")
def retry_stale_pending() -> int:
    """Beat, every SWEEP_INTERVAL: pending members overdue for their next attempt (a retry that could not be
    sent, a worker or web process that died mid-attempt) are tried again. Returns how many were tried."""
    return issuing.member_issue_retry_stale()
