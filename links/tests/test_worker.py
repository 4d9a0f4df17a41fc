"""Link batches in real processes: a Celery worker on Redis makes 50,000 links while the page's numbers move,
and a process killed in the middle of a file leaves a batch that a second run finishes completely."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.db import connection

from conftest import wait_for
from links import services
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode

from .factories import demo_template, upload

ROOT = Path(__file__).resolve().parents[2]
ROWS = 50_000

pytestmark = pytest.mark.django_db(transaction=True)


def _campaign(path: Path, rows: int = ROWS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "phone"])
        for number in range(1, rows + 1):
            # Every 1000th row has a bad address: errors are spread through the file.
            email = f"felagi{number}@example.is" if number % 1000 else f"felagi{number}"
            writer.writerow([email, f"Félagi Númer {number}", f"+354 {8200000 + number}"])
    return path


def _remove_files(batch: LinkBatch) -> None:
    for field in (batch.input_file, batch.output_file, batch.errors_file):
        if field.name and default_storage.exists(field.name):
            default_storage.delete(field.name)


def _check_output(batch: LinkBatch, rows: int = ROWS) -> None:
    with default_storage.open(batch.output_file.name, "rb") as raw:
        lines = list(csv.reader(line.decode("utf-8-sig") for line in raw))
    assert len(lines) == rows + 1
    assert [int(row[0].removeprefix("felagi").split("@")[0]) for row in lines[1:]] == list(range(1, rows + 1))
    bad = [row for row in lines[1:] if row[4]]
    assert len(bad) == rows // 1000 and all(not row[3] for row in bad)
    payload = decode(lines[12345][3].rsplit("/", 1)[1], link_keys())
    assert (payload.row, payload.batch_id) == (12345, batch.pk)
    assert payload.fields == {"email": "felagi12345@example.is", "name": "Félagi Númer 12345", "phone": "+3548212345"}


@pytest.mark.worker
def test_a_worker_makes_50000_links_and_the_progress_moves(celery_worker_process, live_sandbox, manager, tmp_path):
    template = demo_template()
    batch = upload(template, _campaign(tmp_path / "campaign.csv"), user=manager)
    try:
        services.link_batch_confirm(batch=batch, mapping=batch.mapping)  # autocommit: the task goes out now
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batch.refresh_from_db()
            if not seen or seen[-1] != batch.rows_done:
                seen.append(batch.rows_done)
            if batch.is_finished:
                break
            time.sleep(0.05)
        assert batch.status == "succeeded", batch.error
        assert (batch.rows_done, batch.links, batch.errors) == (ROWS, ROWS - ROWS // 1000, ROWS // 1000)
        assert seen == sorted(seen)
        # The bar moved on the way: progress written every PROGRESS_EVERY_SECONDS (0.5 s), and the chunk takes about a second.
        assert len([done for done in seen if 0 < done < ROWS]) >= 1, seen
        _check_output(batch)
    finally:
        _remove_files(batch)


def _process_env(media_root: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings_test",
            "MEDIA_ROOT": media_root,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        }
    )
    return env


@pytest.mark.slow
def test_a_run_killed_mid_file_is_finished_by_the_next_run_with_a_complete_file(sandbox, manager, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.LINKS_CHUNK_ROWS = 5000
    template = demo_template()
    batch = upload(template, _campaign(tmp_path / "campaign.csv"), user=manager)
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)

    # A worker process dies (SIGKILL: no clean-up of any kind) part-way through the file.
    code = f"import django; django.setup(); from links.services import link_batch_process; link_batch_process(batch_id={batch.pk})"
    # Its own process group: the run forks a process per CPU, and the whole group dies at once.
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=_process_env(settings.MEDIA_ROOT), start_new_session=True
    )
    try:
        # Killed once its first chunk is done: on a quiet machine the whole file takes only seconds.
        wait_for(
            lambda: batch.chunks.filter(status="done").exists(),
            timeout=60,
            interval=0.02,
            message="the first run to get going",
        )
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    crashed = LinkBatch.objects.get(pk=batch.pk)
    assert crashed.status == "running" and 0 < crashed.chunks.filter(status="done").count() < crashed.chunks.count()
    assert not crashed.output_file  # nothing half-written was ever handed out

    # The next local run (here once the dead run's chunk has no heartbeat) makes the chunks not done.
    settings.RUN_STALE_SECONDS = 0
    rerun = services.link_batch_process(batch_id=batch.pk)
    assert rerun.status == "succeeded" and rerun.attempt == 1
    assert (rerun.rows_done, rerun.links, rerun.errors, rerun.duplicates) == (
        ROWS,
        ROWS - ROWS // 1000,
        ROWS // 1000,
        0,
    )
    _check_output(rerun)

    # Running it once more (a duplicate delivery) changes nothing.
    again = services.link_batch_process(batch_id=batch.pk)
    assert (again.attempt, again.output_file.name) == (1, rerun.output_file.name)
