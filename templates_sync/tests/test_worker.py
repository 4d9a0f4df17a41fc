"""Real Celery worker processes on the Redis broker, against the sandbox and the test database."""

import os
import time

import pytest

from conftest import (
    SANDBOX_KEY_ID,
    SANDBOX_KEY_TOKEN,
    finish_with_beat,
    kill_worker_part_way,
    start_celery,
    stop_process,
    wait_for,
)
from sandbox import Faults
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
        stop_process(process)
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


def test_a_sync_whose_worker_is_killed_mid_way_is_taken_over_and_finished_without_a_person(live_sandbox, manager):
    from templates_sync import sync
    from templates_sync.tasks import sync_all_templates

    queue = f"sync-takeover-{os.getpid()}"  # the session's worker must not take this test's tasks
    env = {
        "CELERY_QUEUE": queue,
        "SMARTPAGES_API_URL": live_sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "SMARTPAGES_PAGE_SIZE": "2",  # 13 pages
        "TEMPLATE_SYNC_INTERVAL": "3600",  # no scheduled sync: only the sweep may start one
        "RUN_HEARTBEAT_SECONDS": "0.5",
        "RUN_STALE_SECONDS": "4",
        "SWEEP_INTERVAL": "1",
    }
    live_sandbox.faults = Faults(slow_seconds=0.4, scope="templates")  # so the kill lands mid-sync

    def start() -> SyncRun:
        run = sync.sync_run_queue(trigger="manual", triggered_by=manager)
        sync_all_templates.apply_async(kwargs={"run_id": run.pk, "trigger": "manual"}, queue=queue)
        return run

    run = kill_worker_part_way(
        env,
        log_name="sync-killed-worker",
        start=start,
        part_way=lambda run: SyncRun.objects.filter(pk=run.pk, status="running", pages__gte=3).exists(),
        message="the sync to be a few pages in",
    )
    killed_at_page = SyncRun.objects.get(pk=run.pk).pages
    assert 3 <= killed_at_page < 13

    # Beat's sweep queues the dead run again and a worker takes it under its second attempt; should beat's
    # scheduled sync come first (a schedule file left by an earlier session makes it due at once), that run
    # queues the dead one again itself, runs, and the dead one is skipped when its task comes.
    recovery = finish_with_beat(
        env,
        log_name="sync-taking-over-worker",
        finished=lambda: SyncRun.objects.filter(kind="full", status="succeeded").first(),
        timeout=90,
        message="the dead run to be taken over and finished by a worker",
    )

    if recovery.pk == run.pk:
        assert (recovery.trigger, recovery.attempt) == ("manual", 2)
    else:
        assert recovery.trigger == "beat"
    assert (recovery.pages, recovery.total_pages) == (13, 13)  # counted afresh, not on top of the dead run's
    assert recovery.created_count + recovery.updated_count + recovery.unchanged == 25
    assert PassTemplate.objects.filter(removed_at__isnull=True).count() == 25
    assert not SyncRun.objects.filter(status="running").exists()


@pytest.mark.slow
def test_a_sync_of_10000_templates_killed_mid_way_is_taken_over_by_a_second_worker_within_30_seconds(settings, manager):
    """The production defaults (a beat every RUN_HEARTBEAT_SECONDS, stale after RUN_STALE_SECONDS, a sweep every
    SWEEP_INTERVAL): a worker SIGKILLed in the middle of a sync of 10,000 templates costs seconds."""
    from conftest import ARTIFACTS, kill_with_sigkill
    from sandbox import SmartPagesSandbox
    from templates_sync import sync
    from templates_sync.tasks import sync_all_templates

    upstream = SmartPagesSandbox(templates=10_000, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN).start()
    queue = f"sync-takeover-defaults-{os.getpid()}"
    env = {
        "CELERY_QUEUE": queue,
        "SMARTPAGES_API_URL": upstream.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "SMARTPAGES_PAGE_SIZE": "100",  # 100 pages
        "TEMPLATE_SYNC_INTERVAL": "3600",  # no scheduled sync: only the sweep may start one
    }
    upstream.faults = Faults(slow_seconds=0.3, scope="templates")  # about 30 s of pages: the kill lands mid-sync
    survivor = None
    doomed = start_celery(env, log_name="sync-doomed-worker")
    try:
        run = sync.sync_run_queue(trigger="manual", triggered_by=manager)
        sync_all_templates.apply_async(kwargs={"run_id": run.pk, "trigger": "manual"}, queue=queue)
        wait_for(lambda: SyncRun.objects.filter(pk=run.pk, status="running").exists(), message="the sync to start")
        (ARTIFACTS / "sync-survivor-worker-beat-schedule").unlink(missing_ok=True)
        survivor = start_celery(env, beat=True, log_name="sync-survivor-worker")
        wait_for(lambda: SyncRun.objects.filter(pk=run.pk, pages__gte=10).exists(), timeout=60, message="ten pages in")
        kill_with_sigkill(doomed)
        killed_at = time.monotonic()
        killed_at_page = SyncRun.objects.get(pk=run.pk).pages
        # The pages stay slow: the survivor's own attempt then runs longer than RUN_STALE_SECONDS, so attempt 2
        # at the end also shows that the sweep leaves a live, beating run alone.
        taken_over = wait_for(
            lambda: SyncRun.objects.filter(pk=run.pk, status="running", attempt=2).exists() and time.monotonic(),
            timeout=60,
            interval=0.1,
            message="the survivor to take the dead worker's run (its second attempt)",
        )
        recovery = wait_for(
            lambda: SyncRun.objects.filter(pk=run.pk, status="succeeded").first(),
            timeout=120,
            message="the run to finish",
        )
        finished_after = time.monotonic() - killed_at
    finally:
        if survivor is not None:
            stop_process(survivor)
        if doomed.poll() is None:
            stop_process(doomed)
        upstream.stop()
    print(
        f"\nSIGKILL mid-sync (10,000 templates, at page {killed_at_page} of 100): "
        f"taken over after {taken_over - killed_at:.1f} s, finished {finished_after:.1f} s after the kill "
        f"(RUN_STALE_SECONDS {settings.RUN_STALE_SECONDS:g}, SWEEP_INTERVAL {settings.SWEEP_INTERVAL:g})"
    )
    assert taken_over - killed_at <= 30
    assert (recovery.trigger, recovery.attempt, recovery.pages) == ("manual", 2, 100)  # counted afresh
    assert SyncRun.objects.filter(kind="full").count() == 1  # the same run went on: no fresh one
    assert PassTemplate.objects.filter(removed_at__isnull=True).count() == 10_000
