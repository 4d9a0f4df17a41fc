"""Real Celery worker processes on the Redis broker, against the sandbox and the test database."""
import pytest

from conftest import SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN, start_celery, stop_celery, wait_for
from templates_sync.models import PassTemplate, SyncRun

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_celery_beat_triggers_the_full_sync_and_a_worker_runs_it(live_sandbox):
    process = start_celery(
        {
            "SMARTPAGES_API_URL": live_sandbox.url,
            "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
            "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
            "TEMPLATE_SYNC_INTERVAL": "1",
        },
        beat=True,
        log_name="beat-worker",
    )
    try:
        run = wait_for(
            lambda: SyncRun.objects.filter(trigger="beat", status="succeeded").first(),
            timeout=45,
            message="a beat-triggered sync to succeed",
        )
    finally:
        stop_celery(process)
    assert run.created_count + run.updated_count + run.unchanged == len(live_sandbox.template_ids())
    assert PassTemplate.objects.filter(removed_at__isnull=True).count() == len(live_sandbox.template_ids())


def test_sync_now_is_run_by_the_worker_after_commit(celery_worker_process, live_sandbox, manager):
    from templates_sync import services

    run = services.sync_request_full(user=manager)  # autocommit: the task goes out at once

    finished = wait_for(
        lambda: SyncRun.objects.filter(pk=run.pk, status__in=["succeeded", "failed"]).first(),
        message="the worker to finish the manual sync",
    )
    assert finished.status == "succeeded", finished.error
    assert PassTemplate.objects.count() == len(live_sandbox.template_ids())
