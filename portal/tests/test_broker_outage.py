"""Redis stopped while a worker holds retries due later, a task in hand and a delayed message: the same worker
process is alive after, and the retries are done within a minute of Redis coming back.

Retries wait in rows (Member.next_attempt_at), so the portal itself holds no delayed message; the delayed message
here is sent by the test, as a worker that took one before a deploy would hold it. kombu 5.7.0 lost the worker
in that case ("Unrecoverable error"); background/broker.py keeps it.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import ARTIFACTS, own_redis_env, start_celery, stop_process, wait_for
from members.models import Member
from members.services import issuing
from members.tests.factories import mirror_template
from portal.celery import app as celery_app
from sandbox import Faults
from templates_sync import sync
from templates_sync.models import SyncRun

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
HOLDERS = 5


def test_the_worker_outlives_a_redis_outage_holding_retries_and_does_them_once_redis_is_back(own_redis, sandbox):
    club = mirror_template()
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    waiting = [
        issuing.member_issue(
            template=club,
            values={"name": f"Holder {n}", "email": f"holder{n}@example.is", "phone": ""},
            external_id=f"outage-{n}",
            source="link",
        ).member
        for n in range(HOLDERS)
    ]
    assert {member.status for member in waiting} == {Member.Status.PENDING}
    sandbox.faults = Faults(slow_seconds=1.0, scope="templates")  # passes work again; template pages are slow
    # Their next attempts fall due while Redis is away.
    Member.objects.filter(pk__in=[m.pk for m in waiting]).update(next_attempt_at=timezone.now() + timedelta(seconds=12))

    env = {**own_redis_env(own_redis, sandbox), "SWEEP_INTERVAL": "1", "SMARTPAGES_PAGE_SIZE": "2"}
    worker = start_celery(env, beat=True, log_name="broker-outage-worker")
    try:
        with celery_app.connection_for_write(own_redis.url(0)) as connection:
            producer = celery_app.amqp.Producer(connection)
            # A task in hand (acks_late: unacknowledged while it runs): a full sync of 13 slow pages ...
            run = sync.sync_run_queue(trigger="manual")
            celery_app.send_task(
                "templates_sync.sync_all_templates",
                kwargs={"run_id": run.pk, "trigger": "manual"},
                producer=producer,
            )
            # ... and a delayed message, which the worker holds unacknowledged until it is due.
            celery_app.send_task("background.run_sweep", args=["members-due"], countdown=600, producer=producer)
        wait_for(lambda: SyncRun.objects.filter(pk=run.pk, status="running").exists(), message="the sync to start")
        time.sleep(1)

        own_redis.stop()
        time.sleep(10)
        assert worker.poll() is None, "the worker exited while Redis was away"
        own_redis.start()
        back = time.monotonic()

        wait_for(
            lambda: (
                Member.objects.filter(pk__in=[m.pk for m in waiting], status=Member.Status.ISSUED).count() == HOLDERS
            ),
            timeout=60,
            message="the retries to be done after Redis came back",
        )
        done_after = time.monotonic() - back
        assert worker.poll() is None, "the worker exited after Redis came back"
        wait_for(lambda: SyncRun.objects.get(pk=run.pk).is_finished, timeout=60, message="the sync to finish")
        print(
            f"\nRedis down 10 s; {HOLDERS} retries done {done_after:.1f} s after it came back, by worker {worker.pid}"
        )
    finally:
        stop_process(worker)
    log = (ARTIFACTS / "broker-outage-worker.log").read_text()
    assert "Unrecoverable error" not in log
    assert SyncRun.objects.get(pk=run.pk).status == "succeeded"
    assert sorted(
        p["externalIdentifier"] for p in sandbox.passes() if (p.get("externalIdentifier") or "").startswith("outage-")
    ) == [f"outage-{n}" for n in range(HOLDERS)]  # one pass each
