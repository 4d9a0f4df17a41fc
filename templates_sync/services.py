"""Requests for sync work from people: record a queued run, hand it to a worker after commit."""

from .models import PassTemplate, SyncRun
from .selectors import running_full_sync
from .sync import sync_run_queue, sync_run_skip
from .tasks import refresh_template, sync_all_templates


def sync_request_full(*, user) -> SyncRun:
    """A queued full run, or one recorded as skipped at once while another full sync is running."""
    if running_full_sync() is not None:
        return sync_run_skip(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    run = sync_run_queue(trigger=SyncRun.Trigger.MANUAL, triggered_by=user)
    sync_all_templates.delay_on_commit(run_id=run.pk, trigger=SyncRun.Trigger.MANUAL, user_id=user.pk)
    return run


def sync_request_refresh(*, template: PassTemplate, user) -> SyncRun:
    run = sync_run_queue(
        trigger=SyncRun.Trigger.MANUAL, triggered_by=user, kind=SyncRun.Kind.SINGLE, template_id=template.pk
    )
    refresh_template.delay_on_commit(str(template.pk), run_id=run.pk, user_id=user.pk)
    return run
