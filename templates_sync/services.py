"""Requests for sync work from people: record a queued run, hand it to a worker after commit."""

from .enqueue import enqueue_after_commit
from .models import PassTemplate, SyncRun
from .sync import sync_run_queue


def sync_request_full(*, user) -> SyncRun:
    run = sync_run_queue(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    enqueue_after_commit("templates_sync.sync_all_templates", run_id=run.pk, trigger=SyncRun.Trigger.MANUAL, user_id=user.pk)
    return run


def sync_request_refresh(*, template: PassTemplate, user) -> SyncRun:
    run = sync_run_queue(
        trigger=SyncRun.Trigger.MANUAL, triggered_by=user, kind=SyncRun.Kind.SINGLE, template_id=template.pk
    )
    enqueue_after_commit("templates_sync.refresh_template", str(template.pk), run_id=run.pk, user_id=user.pk)
    return run
