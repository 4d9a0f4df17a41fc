"""Beat killed with SIGKILL right after it sent the template sync, then started again: the sync is sent once.

A real `celery beat` process on a redis-server of the test's own. The restarted beat is given its schedule file
as it was before the send, which is what a beat killed before writing it leaves (Celery writes the file only
every few sends or minutes; a container's /tmp does not survive a re-creation), so it takes the sync as due
at once. The stock scheduler then sends it a second time; portal.beat.OnceScheduler does not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from conftest import ARTIFACTS, ROOT, wait_for

pytestmark = pytest.mark.slow

SYNC_TASK = "templates_sync.sync_all_templates"
INTERVAL = 15


def _start_beat(own_redis, schedule: Path, log: Path, scheduler: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "CELERY_BROKER_URL": own_redis.url(0),
            "CACHE_REDIS_URL": own_redis.url(1),
            "TEMPLATE_SYNC_INTERVAL": str(INTERVAL),
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "portal",
        "beat",
        "--loglevel=INFO",
        "--schedule",
        str(schedule),
        "--scheduler",
        scheduler,
        "--max-interval",
        "1",
    ]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "beat: Starting..." in log.read_text(), timeout=60, message="beat to start")
    return process


def _sync_messages(broker: redis.Redis) -> int:
    """The sync tasks waiting in the queue (no worker consumes it here): what beat sent."""
    # The queue beat sends to: CELERY_QUEUE of the environment it inherits, as this process's settings read it.
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    return sum(json.loads(raw)["headers"]["task"] == SYNC_TASK for raw in broker.lrange(queue, 0, -1))


@pytest.mark.parametrize(
    ("scheduler", "sends"),
    [("portal.beat:OnceScheduler", 1), ("celery.beat:PersistentScheduler", 2)],
    ids=["once-scheduler", "stock-scheduler-for-comparison"],
)
def test_a_beat_killed_right_after_a_send_and_restarted_does_not_send_the_sync_again(
    own_redis, tmp_path, scheduler, sends
):
    ARTIFACTS.mkdir(exist_ok=True)
    schedule, saved = tmp_path / "beat" / "schedule", tmp_path / "saved"
    schedule.parent.mkdir()
    logs = [ARTIFACTS / f"beat-{scheduler.split(':')[1]}-{n}.log" for n in (1, 2)]
    broker = redis.Redis.from_url(own_redis.url(0))

    beat = _start_beat(own_redis, schedule, logs[0], scheduler)
    time.sleep(1)  # beat writes its file once it has set the schedule up
    shutil.copytree(schedule.parent, saved)
    wait_for(
        lambda: _sync_messages(broker) == 1,
        timeout=INTERVAL + 30,
        interval=0.02,
        message="beat's first send of the sync",
    )
    beat.send_signal(signal.SIGKILL)
    beat.wait(timeout=10)

    shutil.rmtree(schedule.parent)
    shutil.copytree(saved, schedule.parent)
    restarted = _start_beat(own_redis, schedule, logs[1], scheduler)
    try:
        time.sleep(6)  # the restarted beat takes the sync as due at once; its next regular send is INTERVAL away
    finally:
        restarted.send_signal(signal.SIGKILL)
        restarted.wait(timeout=10)
    second = logs[1].read_text()
    print(f"\n{scheduler}: the sync was sent {_sync_messages(broker)} time(s) across a kill -9 and restart")
    assert _sync_messages(broker) == sends
    if sends == 1:
        assert "sync-all-templates was already sent within its interval" in second
