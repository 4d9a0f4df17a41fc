"""Runs asked for while the broker was away stay queued; the sweep sends them again, and a run starts once."""

from datetime import timedelta

import pytest
from django.utils import timezone

from templates_sync import services, sync
from templates_sync.models import SyncRun

pytestmark = pytest.mark.django_db


def _queued(*, age: timedelta, **fields) -> SyncRun:
    run = sync.sync_run_queue(trigger=SyncRun.Trigger.MANUAL, **fields)
    SyncRun.objects.filter(pk=run.pk).update(queued_at=timezone.now() - age)
    return SyncRun.objects.get(pk=run.pk)


def test_the_sweep_sends_again_only_runs_queued_longer_than_the_overdue_bound(
    sandbox, settings, django_capture_on_commit_callbacks
):
    overdue = timedelta(seconds=settings.SWEEP_OVERDUE_AFTER + 1)
    full = _queued(age=overdue)
    single = _queued(age=overdue, kind=SyncRun.Kind.SINGLE, template_id=sandbox.template_ids()[0])
    _queued(age=timedelta(seconds=2))  # its own task may still be on its way

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.sync_runs_resend_queued() == 2
    assert len(callbacks) == 2

    assert sync.templates_sync_all(run=full).status == SyncRun.Status.SUCCEEDED
    assert sync.template_refresh(template_id=single.template_id, run=single).status == SyncRun.Status.SUCCEEDED


def test_a_second_delivery_of_a_runs_task_does_not_run_it_again(sandbox):
    full = _queued(age=timedelta(minutes=5))
    single = _queued(age=timedelta(minutes=5), kind=SyncRun.Kind.SINGLE, template_id=sandbox.template_ids()[0])
    first_full = sync.templates_sync_all(run=SyncRun.objects.get(pk=full.pk))
    first_single = sync.template_refresh(template_id=single.template_id, run=SyncRun.objects.get(pk=single.pk))
    sandbox.reset_counts()

    again_full = sync.templates_sync_all(run=SyncRun.objects.get(pk=full.pk))
    again_single = sync.template_refresh(template_id=single.template_id, run=SyncRun.objects.get(pk=single.pk))

    assert sandbox.request_count() == 0
    assert (again_full.status, again_full.created_count) == (SyncRun.Status.SUCCEEDED, first_full.created_count)
    assert (again_single.status, again_single.finished_at) == (SyncRun.Status.SUCCEEDED, first_single.finished_at)


def test_one_beat_entry_sends_every_apps_sweep_and_each_one_runs(settings, django_capture_on_commit_callbacks):
    from background import recovery

    sweep_entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"].endswith("sweep_recorded_work")]
    assert (
        len(sweep_entries) == 1 and len(settings.CELERY_BEAT_SCHEDULE) == 4
    )  # syncs, member refresh, sweeps, sign-in records
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert recovery.sweeps_send_all() == len(settings.RECOVERY_SWEEPS)
    assert len(callbacks) == len(settings.RECOVERY_SWEEPS)  # one task a sweep, sent after commit
    # Each named sweep imports and runs (nothing to do on an empty database); an unknown name runs nothing.
    for name in settings.RECOVERY_SWEEPS:
        outcome = recovery.sweep_run(name)
        assert outcome == 0 or set(outcome.values()) == {0}, (name, outcome)
    assert recovery.sweep_run("os.system") is None
