"""Celery entry points for the template mirror: thin, they take ids and call the sync service."""

from celery import shared_task
from django.contrib.auth import get_user_model

from . import recovery, sync
from .models import SyncRun


@shared_task(name="templates_sync.sync_all_templates")
def sync_all_templates(
    *, run_id: int | None = None, trigger: str = SyncRun.Trigger.BEAT, user_id: int | None = None
) -> str:
    run = SyncRun.objects.filter(pk=run_id).first() if run_id else None
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return sync.templates_sync_all(run=run, trigger=trigger, triggered_by=user).status


@shared_task(name="templates_sync.refresh_template")
def refresh_template(
    template_id: str,
    *,
    run_id: int | None = None,
    user_id: int | None = None,
    trigger: str = SyncRun.Trigger.MANUAL,
) -> str:
    run = SyncRun.objects.filter(pk=run_id).first() if run_id else None
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return sync.template_refresh(template_id=template_id, run=run, triggered_by=user, trigger=trigger).status


@shared_task(name="templates_sync.sweep_recorded_work", ignore_result=True)
def sweep_recorded_work() -> int:
    """Beat, every SWEEP_INTERVAL: one task per recovery sweep, each sending again the work its app lost."""
    return recovery.sweeps_send_all()


@shared_task(name="templates_sync.run_sweep", ignore_result=True)
def run_sweep(name: str):
    return recovery.sweep_run(name)
