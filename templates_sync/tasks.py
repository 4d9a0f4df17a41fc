"""Celery entry points for the template mirror: thin, they take ids and call the sync service."""

from celery import shared_task
from django.contrib.auth import get_user_model

from . import sync
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
