"""The retention job in a real Celery worker: beat's entry sends it, the worker deletes what is due."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuthEvent, StaffAction
from audit.tasks import delete_expired_records
from conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_beat_schedules_the_job_and_a_worker_deletes_sign_in_events_past_auth_events_days(celery_worker_process):
    entry = settings.CELERY_BEAT_SCHEDULE["delete-expired-audit-records"]
    assert (entry["task"], entry["schedule"]) == ("audit.delete_expired_records", 86400.0)
    old = AuthEvent.objects.create(kind=AuthEvent.Kind.LOGIN_FAILED, username="(unknown)")
    AuthEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=settings.AUTH_EVENTS_DAYS + 1))
    kept = AuthEvent.objects.create(kind=AuthEvent.Kind.LOGIN, username="maria")
    action = StaffAction.objects.create(actor_name="maria", action="members:member_void")
    StaffAction.objects.filter(pk=action.pk).update(at=timezone.now() - timedelta(days=3650))

    delete_expired_records.delay()

    wait_for(lambda: not AuthEvent.objects.filter(pk=old.pk).exists(), message="the old sign-in event deleted")
    assert list(AuthEvent.objects.all()) == [kept]
    assert StaffAction.objects.filter(pk=action.pk).exists()  # AUDIT_DAYS unset: the staff action log is kept
