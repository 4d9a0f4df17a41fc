"""SyncRun records: queued, skipped, taken over when their worker died, and the one-full-run-at-a-time lock."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ..models import SyncRun

logger = logging.getLogger(__name__)


class RunTakenOver(Exception):
    """This run stopped beating long enough for another worker to take it over: it must stop writing."""


# --- runs ---------------------------------------------------------------------------------------------
def sync_run_queue(*, trigger: str, triggered_by=None, kind: str = SyncRun.Kind.FULL, template_id=None) -> SyncRun:
    """Record a queued run, so that a page can follow it before a worker picks it up."""
    return SyncRun.objects.create(kind=kind, template_id=template_id, trigger=trigger, triggered_by=triggered_by)


def sync_run_skip(*, trigger: str, triggered_by=None) -> SyncRun:
    """Record a full run that was not started because another one is running."""
    now = timezone.now()
    return SyncRun.objects.create(
        trigger=trigger,
        triggered_by=triggered_by,
        status=SyncRun.Status.SKIPPED,
        warning=_SKIPPED_WARNING,
        started_at=now,
        finished_at=now,
    )


_SKIPPED_WARNING = "Skipped: another full sync was already running."
_ABANDONED_ERROR = "Abandoned: its worker stopped beating (no heartbeat for {seconds} s); taken over."
_COUNTS_AFRESH = {
    "pages": 0,
    "created_count": 0,
    "updated_count": 0,
    "unchanged": 0,
    "removed": 0,
    "total_pages": None,
    "total_items": None,
    "error": "",
    "warning": "",
}


def _stale_runs():
    """Running runs whose worker has not beaten for RUN_STALE_SECONDS."""
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=SyncRun.stale_before()) | Q(heartbeat_at__isnull=True, started_at__lt=SyncRun.stale_before())
    )


def sync_runs_take_over_stale() -> list[SyncRun]:
    """Mark every stale running run failed (which releases the full-sync lock at once).

    Returns the full runs taken over, each only once even when two sweeps race: the caller queues a
    fresh run in their place.
    """
    taken = []
    for run in _stale_runs():
        seconds = settings.RUN_STALE_SECONDS
        if SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=SyncRun.Status.FAILED, error=_ABANDONED_ERROR.format(seconds=seconds), finished_at=timezone.now()
        ):
            logger.warning("template sync run %s taken over: no heartbeat for %s s", run.pk, seconds)
            if run.kind == SyncRun.Kind.FULL:
                taken.append(run)
    return taken


def _claim_lock(run: SyncRun) -> bool:
    """Move `run` to RUNNING; False when it must not run now.

    A finished run (say, taken over while its task waited in the broker) is left as it is; a run that is
    RUNNING already is a task delivered again: left alone while its worker still beats, restarted with
    its counts afresh once it went stale. When another full run holds the lock, `run` is SKIPPED.
    """
    now = timezone.now()
    if run.status == SyncRun.Status.RUNNING:
        restarted = (
            SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING)
            .filter(Q(heartbeat_at__lt=SyncRun.stale_before()) | Q(heartbeat_at__isnull=True))
            .update(started_at=now, heartbeat_at=now, **_COUNTS_AFRESH)
        )
        if not restarted:
            return False
        for name, value in _COUNTS_AFRESH.items():
            setattr(run, name, value)
        run.started_at = run.heartbeat_at = now
        return True
    if run.status != SyncRun.Status.QUEUED:
        return False
    sync_runs_take_over_stale()  # a dead worker's run no longer holds the lock; this run replaces it
    run.started_at = run.heartbeat_at = now
    try:
        with transaction.atomic():
            claimed = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
                status=SyncRun.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        run.status, run.warning, run.finished_at = SyncRun.Status.SKIPPED, _SKIPPED_WARNING, timezone.now()
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
            status=run.status, warning=run.warning, started_at=now, finished_at=run.finished_at
        )
        return False
    if claimed:
        run.status = SyncRun.Status.RUNNING
    return bool(claimed)


# --- retries after an unreachable SmartPages -----------------------------------------------------------------
RETRY_FIRST_SECONDS = 60
_RETRY_WAITING = "Waiting to retry: the last full sync could not reach SmartPages."
_RETRY_NOT_NEEDED = "Not needed: a later full sync succeeded."


def sync_retry_delay(failures: int) -> float:
    """Seconds before the retry after `failures` failed full syncs in a row: 1, 2, 4 … minutes, never longer
    than the schedule's own interval (TEMPLATE_SYNC_INTERVAL), which would run one anyway."""
    return float(min(RETRY_FIRST_SECONDS * 2 ** max(failures - 1, 0), settings.TEMPLATE_SYNC_INTERVAL))


def sync_run_retry_later(*, failed: SyncRun) -> SyncRun | None:
    """Record a queued full run, due after the backoff, for a full run that failed because SmartPages could
    not be reached; the recovery sweep sends it once due (`not_before`). None when a retry is waiting already."""
    if SyncRun.objects.filter(
        kind=SyncRun.Kind.FULL, status=SyncRun.Status.QUEUED, trigger=SyncRun.Trigger.RETRY
    ).exists():
        return None
    recent = (
        SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED])
        .order_by("-queued_at", "-id")
        .values_list("status", flat=True)[:20]
    )
    failures = 0
    for status in recent:
        if status != SyncRun.Status.FAILED:
            break
        failures += 1
    delay = sync_retry_delay(max(failures, 1))
    retry = SyncRun.objects.create(
        kind=SyncRun.Kind.FULL,
        trigger=SyncRun.Trigger.RETRY,
        not_before=timezone.now() + timedelta(seconds=delay),
        warning=_RETRY_WAITING,
    )
    logger.info("template sync run %s failed (SmartPages unreachable): retry %s in %d s", failed.pk, retry.pk, delay)
    return retry


def sync_retries_drop_waiting(*, succeeded: SyncRun) -> int:
    """A full sync succeeded: the retries still waiting are not needed any more (recorded as skipped)."""
    return (
        SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status=SyncRun.Status.QUEUED, trigger=SyncRun.Trigger.RETRY)
        .exclude(pk=succeeded.pk)
        .update(status=SyncRun.Status.SKIPPED, warning=_RETRY_NOT_NEEDED, finished_at=timezone.now())
    )


def sync_runs_abandoned_in_a_row() -> int:
    """How many of the latest finished full runs in a row were taken over because their worker died."""
    recent = (
        SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED])
        .order_by("-finished_at", "-id")
        .values_list("error", flat=True)[:20]
    )
    abandoned = 0
    for error in recent:
        if not error.startswith(_ABANDONED_ERROR.split(" (", 1)[0]):
            break
        abandoned += 1
    return abandoned
