"""Requests for sync work from people: record a queued run, hand it to a worker after commit; and the sweep that
sends again the runs whose task never came (the broker was away when they were asked for)."""

import logging

from django.db.models import Q
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.recovery import MAX_ATTEMPTS, resend_waiting

from .models import PassTemplate, SyncRun
from .selectors import running_full_sync
from .sync.runs import sync_run_queue, sync_run_skip, sync_runs_abandoned_in_a_row, sync_runs_take_over_stale

logger = logging.getLogger(__name__)


def sync_request_full(*, user) -> SyncRun:
    """A queued full run, or one recorded as skipped at once while another full sync is running."""
    if running_full_sync() is not None:
        return sync_run_skip(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    run = sync_run_queue(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    _send(run)
    return run


def sync_request_refresh(*, template: PassTemplate, user) -> SyncRun:
    run = sync_run_queue(
        trigger=SyncRun.Trigger.MANUAL, triggered_by=user, kind=SyncRun.Kind.SINGLE, template_id=template.pk
    )
    _send(run)
    return run


def sync_runs_resend_queued() -> int:
    """A sweep (background.recovery): runs left queued because their task was lost are sent again, and so is a
    retry after an unreachable SmartPages once it is due (`not_before`)."""
    due = SyncRun.objects.filter(Q(not_before__isnull=True) | Q(not_before__lte=timezone.now()))
    return resend_waiting(due, _send)


def sync_runs_recover_stale() -> int:
    """Beat's take-over sweep: runs whose worker died (no heartbeat for RUN_STALE_SECONDS) are marked
    failed, releasing the lock, and a fresh full run is queued for each full one. Returns how many were taken."""
    taken = sync_runs_take_over_stale()
    if taken and sync_runs_abandoned_in_a_row() >= MAX_ATTEMPTS:
        # The one attempts rule of background.recovery: a sync that kills every worker it meets is not handed
        # on for ever. The schedule's next run tries again; the runs page shows why they failed.
        logger.error("The last %d full syncs all lost their worker; no fresh run queued", MAX_ATTEMPTS)
        return len(taken)
    for _ in taken:
        _send(sync_run_queue(trigger=SyncRun.Trigger.RECOVERY))
    return len(taken)


def _send(run: SyncRun) -> None:
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
