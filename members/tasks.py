"""Celery entry points for members: thin, they take ids and call a service."""
from celery import shared_task

from . import services
from .models import AutofillBackfill, Member


@shared_task(name="members.autofill_backfill")
def autofill_backfill(backfill_id: int) -> str:
    backfill = AutofillBackfill.objects.select_related("template").filter(pk=backfill_id).first()
    if backfill is None:
        return "missing"
    return services.autofill_backfill_run(backfill=backfill).status


@shared_task(name="members.member_issue_retry")
def member_issue_retry(member_id: int) -> str:
    member = Member.objects.select_related("template").filter(pk=member_id).first()
    if member is None:
        return "missing"
    return services.member_issue_retry(member=member).status
