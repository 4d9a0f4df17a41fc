"""Requests for sync work from people: record a queued run, hand it to a worker after commit; and the sweep that
sends again the runs whose task never came (the broker was away when they were asked for)."""

import logging

from django.db.models import Q
from django.utils import timezone

from background.recovery import resend_waiting

from .models import PassTemplate, SyncRun
from .selectors import running_full_sync
from .sync.runs import sync_run_queue, sync_run_send, sync_run_skip, sync_runs_requeue_stale

logger = logging.getLogger(__name__)


def sync_request_full(*, user) -> SyncRun:
    """A queued full run, or one recorded as skipped at once while another full sync is running."""
    if running_full_sync() is not None:
        return sync_run_skip(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    run = sync_run_queue(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    sync_run_send(run)
    return run


def sync_request_refresh(*, template: PassTemplate, user) -> SyncRun:
    run = sync_run_queue(
        trigger=SyncRun.Trigger.MANUAL, triggered_by=user, kind=SyncRun.Kind.SINGLE, template_id=template.pk
    )
    sync_run_send(run)
    return run


def sync_runs_resend_queued() -> int:
    """A sweep (background.recovery): runs left queued because their task was lost are sent again, and so is a
    retry after an unreachable SmartPages once it is due (`not_before`)."""
    due = SyncRun.objects.filter(Q(not_before__isnull=True) | Q(not_before__lte=timezone.now()))
    return resend_waiting(due, sync_run_send)


def sync_runs_recover_stale() -> int:
    """A sweep (background.recovery): runs whose worker died (no heartbeat for RUN_STALE_SECONDS) are queued
    again and their task sent; the next worker goes on under the next attempt number. Returns how many."""
    return sync_runs_requeue_stale()
