from celery import shared_task
from django.conf import settings

from .services import audit_records_delete_expired


@shared_task(name="audit.delete_expired_records")
def delete_expired_records() -> dict[str, int]:
    """Beat's daily retention job: AUTH_EVENTS_DAYS for sign-in records, AUDIT_DAYS for staff actions."""
    return audit_records_delete_expired(auth_events_days=settings.AUTH_EVENTS_DAYS, audit_days=settings.AUDIT_DAYS)
