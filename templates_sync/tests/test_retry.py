"""A full sync that could not reach SmartPages is tried again with backoff (1, 2, 4 … minutes, never longer than
the schedule's interval); the retry waits in its row, and the recovery sweep sends it once it is due."""

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.celery import app as celery_app
from sandbox import Faults
from templates_sync import services, sync
from templates_sync.client import SmartPagesClient, request_retry
from templates_sync.models import SyncRun

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    tasks = []
    monkeypatch.setattr(
        celery_app,
        "send_task",
        lambda name, args=(), kwargs=None, **options: tasks.append((name, kwargs, options.get("countdown"))),
    )
    return tasks


def _unreachable(settings) -> SmartPagesClient:
    # One try per call: the test is about the run's retry, not urllib3's.
    return SmartPagesClient(
        base_url=settings.SMARTPAGES_API_URL,
        key_id=settings.SMARTPAGES_KEY_ID,
        key_token=settings.SMARTPAGES_KEY_TOKEN,
        retry=request_retry(),
    )


def _due_now(run: SyncRun) -> None:
    SyncRun.objects.filter(pk=run.pk).update(not_before=timezone.now(), queued_at=timezone.now() - timedelta(minutes=5))


def test_a_sync_that_cannot_reach_smartpages_is_retried_with_backoff_until_it_succeeds(sandbox, settings, sent):
    settings.TEMPLATE_SYNC_INTERVAL = 300
    sandbox.faults = Faults(error_rate=1.0, scope="templates")
    delays = []
    run = sync.templates_sync_all(client=_unreachable(settings))
    for _ in range(4):
        assert run.status == "failed" and "503" in run.error
        retry = SyncRun.objects.get(status="queued", trigger="retry")
        delays.append(round((retry.not_before - run.finished_at).total_seconds() / 60, 1))
        assert services.sync_runs_resend_queued() == 0  # not due yet: nothing sent
        _due_now(retry)
        assert services.sync_runs_resend_queued() == 1
        assert sent[-1] == (
            "templates_sync.sync_all_templates",
            {"run_id": retry.pk, "trigger": "retry", "user_id": None},
            None,
        )
        run = sync.templates_sync_all(run=retry, client=_unreachable(settings))  # what the sent task does
    assert delays == [1.0, 2.0, 4.0, 5.0]  # capped by TEMPLATE_SYNC_INTERVAL (5 minutes here)

    sandbox.faults = Faults()
    retry = SyncRun.objects.get(status="queued", trigger="retry")
    scheduled = sync.templates_sync_all()  # the schedule's own run, before the retry is due
    assert scheduled.status == "succeeded"
    retry.refresh_from_db()
    assert (retry.status, retry.warning) == ("skipped", "Not needed: a later full sync succeeded.")
    assert not SyncRun.objects.filter(status="queued").exists()
    assert all(countdown is None for _, _, countdown in sent)


def test_a_sync_refused_for_good_is_not_retried(sandbox, settings):
    settings.SMARTPAGES_KEY_TOKEN = "wrong"
    run = sync.templates_sync_all()
    assert run.status == "failed"
    assert not SyncRun.objects.filter(trigger="retry").exists()
