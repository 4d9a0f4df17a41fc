"""SyncRun records: queued, skipped, taken by a worker and queued again when it died (background.recovery's take,
Heartbeat and requeue_stale, with its one attempts rule, as every other kind of recorded work), and the
one-full-run-at-a-time lock."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.recovery import MAX_ATTEMPTS, Heartbeat, requeue_stale, take

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
_GAVE_UP = "Not done: a worker stopped {attempts} times while running this sync; the schedule's next run tries again."
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


def sync_run_send(run: SyncRun) -> None:
    """Send the task that runs `run` (after commit)."""
    if run.kind == SyncRun.Kind.SINGLE:
        enqueue_after_commit(
            "templates_sync.refresh_template",
            str(run.template_id),
            run_id=run.pk,
            user_id=run.triggered_by_id,
            trigger=run.trigger,
        )
    else:
        enqueue_after_commit(
            "templates_sync.sync_all_templates", run_id=run.pk, trigger=run.trigger, user_id=run.triggered_by_id
        )


def sync_runs_requeue_stale() -> int:
    """background.recovery's one path for work whose worker died: every running run silent for RUN_STALE_SECONDS
    goes back to QUEUED (which releases the one-full-sync lock at once) and its task is sent again; the worker
    that takes it starts its counts afresh under the next attempt number. Returns how many were queued again."""
    return requeue_stale(SyncRun.objects.all(), sync_run_send)


def sync_run_take(run: SyncRun) -> Heartbeat | None:
    """Take a QUEUED run for this worker (background.recovery.take: RUNNING under the next attempt, counts
    afresh); its heartbeat, or None when it must not run now.

    A run that is not QUEUED is left as it is: one finished, or a task delivered again while its worker still
    beats (a run whose worker died is queued again by the sweep, sync_runs_requeue_stale). A full run while
    another holds the lock is recorded as SKIPPED — unless the holder's worker died: that run is queued again
    first (to be skipped in its turn) and this one runs. A run taken more than MAX_ATTEMPTS times (each take
    after the first follows a worker that died in it) fails with the reason instead of running again.
    """
    if run.status != SyncRun.Status.QUEUED:
        return None
    now = timezone.now()
    for first_try in (True, False):
        try:
            with transaction.atomic():
                beat = take(run, started_at=now, finished_at=None, **_COUNTS_AFRESH)
            break
        except IntegrityError:  # another full run is RUNNING: the lock is held
            if first_try and requeue_stale(SyncRun.objects.filter(kind=SyncRun.Kind.FULL), sync_run_send):
                continue
            run.status, run.warning, run.finished_at = SyncRun.Status.SKIPPED, _SKIPPED_WARNING, timezone.now()
            SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
                status=run.status, warning=run.warning, started_at=now, finished_at=run.finished_at
            )
            return None
    if beat is None:
        return None
    for name, value in _COUNTS_AFRESH.items():
        setattr(run, name, value)
    run.started_at, run.finished_at = now, None
    if run.attempt > MAX_ATTEMPTS:
        run.status, run.error, run.finished_at = SyncRun.Status.FAILED, _GAVE_UP.format(attempts=MAX_ATTEMPTS), now
        beat.mine.update(status=run.status, error=run.error, finished_at=now, heartbeat_at=now)
        logger.error("template sync run %s: %s", run.pk, run.error)
        return None
    return beat


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
