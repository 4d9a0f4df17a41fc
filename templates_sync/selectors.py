"""Reads of the template mirror for pages, commands and the other apps."""

import uuid

from django.db.models import Q, QuerySet

from .models import PassTemplate, SyncRun


def template_list(*, search: str = "", type: str = "", status: str = "", removed: str = "") -> QuerySet[PassTemplate]:
    templates = PassTemplate.objects.all()
    search = search.strip()
    if search:
        condition = Q(name__icontains=search)
        try:
            condition |= Q(id=uuid.UUID(search))
        except ValueError:
            pass
        templates = templates.filter(condition)
    if type:
        templates = templates.filter(type=type)
    if status:
        templates = templates.filter(status=status)
    if removed == "yes":
        templates = templates.filter(removed_at__isnull=False)
    elif removed == "no":
        templates = templates.filter(removed_at__isnull=True)
    return templates


def last_full_sync() -> SyncRun | None:
    return SyncRun.objects.filter(kind=SyncRun.Kind.FULL).exclude(status=SyncRun.Status.SKIPPED).first()


def last_successful_full_sync() -> SyncRun | None:
    return SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status=SyncRun.Status.SUCCEEDED).first()


def running_full_sync() -> SyncRun | None:
    """The full sync running now with its worker still beating, if there is one."""
    return SyncRun.objects.filter(
        kind=SyncRun.Kind.FULL, status=SyncRun.Status.RUNNING, heartbeat_at__gte=SyncRun.stale_before()
    ).first()


def sync_run_history() -> QuerySet[SyncRun]:
    return SyncRun.objects.select_related("triggered_by")
