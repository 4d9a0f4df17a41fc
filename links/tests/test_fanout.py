"""A batch cut into chunks gives the file one process gives: in local processes (`--jobs`), on a pool of two
Celery workers, and after a worker is killed with SIGKILL mid-batch (the sweeper hands its chunks on)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import QuerySet

from conftest import (
    kill_with_sigkill,
    kill_worker_part_way,
    start_celery,
    stop_process,
    terminate_own_backend,
    wait_for,
)
from links import services
from links.keyring import link_keys
from links.models import LinkBatch, LinkChunk
from links.services import assembly, processing
from links.tokens import decode
from portal.celery import app as celery_app

from .factories import demo_template, upload

pytestmark = pytest.mark.django_db(transaction=True)


def campaign(path: Path, rows: int) -> Path:
    """Rows with what chunking could get wrong: bad addresses, names with a quoted newline, blank lines
    (row numbers skip them), and repeats of early rows scattered over later chunks, several per chunk
    (the first repeat in a chunk and the ones after it both name the row in the earliest chunk)."""
    values: list[list[str]] = []
    for number in range(1, rows + 1):
        if number % 50 == 0:
            values.append(list(values[number // 250]))  # the same values as row number // 250 + 1
        elif number % 97 == 0:
            values.append([f"felagi{number}", f"Félagi {number}", ""])
        else:
            name = f"Félagi\nNúmer {number}" if number % 31 == 0 else f"Félagi Númer {number}"
            values.append([f"felagi{number}@example.is", name, f"+354 {8200000 + number}"])
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "phone"])
        for number, row in enumerate(values, start=1):
            writer.writerow(row)
            if number % 400 == 0:
                out.write("\r\n")  # a blank line: not a row, but it uses up a row number
    return path


def make(template, path: Path, settings, *, chunk_rows: int, jobs: int | None) -> LinkBatch:
    settings.LINKS_CHUNK_ROWS = chunk_rows
    batch = upload(template, path)
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    if jobs is None:
        return batch
    return services.link_batch_process(batch_id=batch.pk, jobs=jobs)


def read_result(name: str) -> list[list[str]]:
    with default_storage.open(name, "rb") as raw:
        data = raw.read()
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(data.decode("utf-8-sig").splitlines(keepends=True)))


def comparable(batch: LinkBatch) -> tuple:
    """Everything a batch produced, with each link replaced by what it decodes to (nonces are random and
    the batch id differs between two batches)."""
    keys = link_keys()
    rows = []
    for cells in read_result(batch.output_file.name)[1:]:
        link = cells[-2]
        if link:
            payload = decode(link.rsplit("/", 1)[1], keys)
            assert payload.batch_id == batch.pk
            link = (payload.row, payload.fields, payload.external_id)
        rows.append((*cells[:-2], link, cells[-1]))
    counts = (
        batch.status,
        batch.rows_total,
        batch.rows_done,
        batch.links,
        batch.errors,
        batch.warnings,
        batch.duplicates,
        batch.existing_members,
    )
    return counts, rows, read_result(batch.errors_file.name), batch.summary


@pytest.fixture
def one_process(sandbox, settings, tmp_path):
    """The file and its result from one chunk made in this process: what every other run must equal."""
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 3000)
    batch = make(template, path, settings, chunk_rows=10**9, jobs=1)
    assert batch.status == "succeeded" and len(batch.plan) == 1
    return template, path, comparable(batch)


@pytest.mark.slow  # starts processes
def test_chunks_in_two_local_processes_give_the_one_process_file(one_process, settings):
    template, path, expected = one_process
    batch = make(template, path, settings, chunk_rows=300, jobs=2)
    assert len(batch.plan) == 10
    assert comparable(batch) == expected
    counts, rows, errors, summary = expected
    # The file holds what the comparison is about: repeats across chunks and error rows.
    assert counts[6] == 60 and counts[4] == 30
    assert rows[1049][-1] == "Warning: the same values as row 5."  # row 1050 (after two blank lines), chunk 4
    reasons = {(entry["kind"], entry["reason"]): entry for entry in summary}
    repeats = reasons[("warning", "the same values as row N.")]
    assert (repeats["count"], repeats["rows"], repeats["example"]) == (
        60,
        [50, 100, 150, 200, 250],
        "Warning: the same values as row 1.",
    )
    bad_emails = [(entry["count"], entry["rows"]) for entry in summary if entry["kind"] == "error"]
    assert bad_emails == [(30, [97, 194, 291, 388, 486])]  # one reason; 486: a blank line came before it
    # Nothing of the chunks is left: their rows, files and the batch's key table.
    assert not LinkChunk.objects.filter(batch=batch).exists()
    assert not default_storage.listdir(batch.sibling_path("chunks"))[1]


@pytest.mark.slow  # takes seconds
@pytest.mark.parametrize("query", ["answers late", "answers at once"])
def test_the_assembly_gives_the_same_file_whenever_the_repeats_query_answers(one_process, settings, monkeypatch, query):
    # The query for holders repeated across chunks runs beside the copy of the chunks' files: answering after
    # every chunk was copied as it was, the output is copied again with the repeats put right.
    template, path, expected = one_process
    answer = assembly._repeated_on_own_connection
    started = threading.Event()

    def late(batch_id, part, parts):
        started.set()
        time.sleep(0.5)
        return answer(batch_id, part, parts)

    def at_once(batch_id, part, parts):
        started.set()
        return answer(batch_id, part, parts)

    # The timing of the assembly's two halves is not reachable through a public function: patched in its module.
    monkeypatch.setattr(assembly, "_repeated_on_own_connection", late if query == "answers late" else at_once)
    monkeypatch.setattr(assembly, "_Stored", _after(started, assembly._Stored, wait=query != "answers late"))
    copied_again = []
    check = assembly._Assembly.copied_unchecked_repeats
    monkeypatch.setattr(
        assembly._Assembly,
        "copied_unchecked_repeats",
        lambda self: copied_again.append(check(self)) or copied_again[-1],
    )
    batch = make(template, path, settings, chunk_rows=300, jobs=1)
    assert copied_again == [query == "answers late"]
    assert comparable(batch) == expected


def _after(started: threading.Event, stored: type, *, wait: bool) -> type:
    """The assembly's stored-file piece, which, when `wait`, first gives the query time to answer."""

    class AfterTheQuery(stored):
        def __new__(cls, name):
            if wait:
                started.wait(5)
                time.sleep(0.2)
            return super().__new__(cls, name)

    return AfterTheQuery


@pytest.mark.slow  # takes seconds
def test_one_chunk_per_row_gives_the_same_file(one_process, settings, tmp_path):
    template, _, _ = one_process
    path = campaign(tmp_path / "small.csv", 120)
    single = make(template, path, settings, chunk_rows=10**9, jobs=1)
    per_row = make(template, path, settings, chunk_rows=1, jobs=1)
    assert len(per_row.plan) == 120
    assert comparable(per_row)[1:] == comparable(single)[1:]


@pytest.mark.worker
def test_a_pool_of_two_workers_gives_the_one_process_file(one_process, celery_worker_process, live_sandbox, settings):
    template, path, expected = one_process
    batch = make(template, path, settings, chunk_rows=300, jobs=None)
    services.link_batch_process(batch_id=batch.pk, jobs=None)  # what the task does: the chunks go out
    wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=120, message="the batch to finish")
    batch.refresh_from_db()
    assert comparable(batch) == expected


@pytest.mark.worker
def test_a_worker_killed_mid_batch_costs_its_chunks_and_the_batch_finishes_right(
    sandbox, own_redis, settings, tmp_path
):
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 40_000)
    expected = comparable(make(template, path, settings, chunk_rows=10**9, jobs=1))
    env = {
        "SMARTPAGES_API_URL": sandbox.url,
        "CELERY_BROKER_URL": own_redis.url(0),
        "RUN_HEARTBEAT_SECONDS": "0.5",
        "RUN_STALE_SECONDS": "3",
        "SWEEP_INTERVAL": "1",
        "CACHE_REDIS_URL": own_redis.url(1),
    }

    def start() -> LinkBatch:
        batch = make(template, path, settings, chunk_rows=1000, jobs=None)
        # The chunks go out on this test's own broker (the task's path), from a process that uses it.
        code = (
            "import django; django.setup(); from links import services; "
            f"services.link_batch_process(batch_id={batch.pk}, jobs=None)"
        )
        subprocess.run(
            [sys.executable, "-c", code],
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "portal.settings_test",
                **env,
                "DATABASE_URL": _database_url(),
            },
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        return batch

    batch = kill_worker_part_way(
        env,
        log_name="links-killed",
        start=start,
        # Two chunks done and one being made: the kill must not fall between chunks.
        part_way=lambda batch: (
            LinkChunk.objects.filter(batch=batch, status="done").count() >= 2
            and LinkChunk.objects.filter(batch=batch, status="running").exists()
        ),
        timeout=120,
        message="two chunks done and one being made",
    )
    killed = LinkBatch.objects.get(pk=batch.pk)
    assert killed.status == "running"
    lost = set(LinkChunk.objects.filter(batch=batch, status="running").values_list("index", flat=True))
    assert lost  # the worker died in the middle of chunks
    done_before = dict(LinkChunk.objects.filter(batch=batch, status="done").values_list("index", "attempt"))

    # A new worker with beat: the sweep finds the dead worker's chunks without a heartbeat and sends them
    # again, with the chunks still waiting (their messages were held by the dead worker).
    second = start_celery(env, beat=True, log_name="links-after-kill")
    try:
        wait_for(
            lambda: LinkChunk.objects.filter(batch=batch, index__in=lost, attempt__gte=2).count() == len(lost),
            timeout=120,
            message="the lost chunks to be made again",
        )
        assert dict(LinkChunk.objects.filter(batch=batch, index__in=done_before).values_list("index", "attempt")) == (
            done_before
        )  # chunks made before the kill were not made again
        wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=180, message="the batch to finish")
    finally:
        stop_process(second)
    batch.refresh_from_db()
    assert comparable(batch) == expected
    assert batch.attempt == 1  # the batch was not started over: only the lost chunks were made again


def _send_chunks_on(env: dict[str, str], batch: LinkBatch) -> None:
    """The batch's chunks sent on the broker of `env` (the task's path), from a process that uses it."""
    code = (
        "import django; django.setup(); from links import services; "
        f"services.link_batch_process(batch_id={batch.pk}, jobs=None)"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings_test", **env, "DATABASE_URL": _database_url()},
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.mark.worker
def test_a_worker_killed_mid_batch_beside_a_second_worker_costs_seconds_not_minutes(
    sandbox, own_redis, settings, tmp_path
):
    """Two workers, the production defaults (a beat every RUN_HEARTBEAT_SECONDS, stale after RUN_STALE_SECONDS,
    a sweep every SWEEP_INTERVAL): one is SIGKILLed in the middle of a 200,000-row batch; the other takes its
    chunks over and the batch is complete, every row in order, within a minute of the kill."""
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 200_000)
    expected = comparable(make(template, path, settings, chunk_rows=10**9, jobs=1))
    env = {
        "SMARTPAGES_API_URL": sandbox.url,
        "CELERY_BROKER_URL": own_redis.url(0),
        "CACHE_REDIS_URL": own_redis.url(1),
        "LINKS_CHUNK_ROWS": "20000",
    }
    doomed = start_celery(env, log_name="links-doomed")
    survivor = start_celery(env, beat=True, log_name="links-survivor")
    try:
        batch = make(template, path, settings, chunk_rows=20_000, jobs=None)
        _send_chunks_on(env, batch)
        # More chunks running than the survivor (concurrency 2) can hold: the doomed worker holds one at least.
        wait_for(
            lambda: LinkChunk.objects.filter(batch=batch, status="running").count() >= 3,
            timeout=120,
            interval=0.05,
            message="both workers making chunks",
        )
        kill_with_sigkill(doomed)
        killed_at = time.monotonic()
        lost = set(LinkChunk.objects.filter(batch=batch, status="running").values_list("index", flat=True))
        taken_over = wait_for(
            lambda: LinkChunk.objects.filter(batch=batch, attempt__gte=2).exists() and time.monotonic(),
            timeout=60,
            interval=0.1,
            message="a lost chunk to be taken over",
        )
        wait_for(
            lambda: LinkBatch.objects.get(pk=batch.pk).is_finished,
            timeout=max(1.0, 60 - (time.monotonic() - killed_at)),
            interval=0.1,
            message="the batch to finish within 60 s of the kill",
        )
        finished_after = time.monotonic() - killed_at
    finally:
        stop_process(survivor)
    batch.refresh_from_db()
    print(
        f"\nSIGKILL mid-batch (200,000 rows, {len(lost)} chunks running): taken over after "
        f"{taken_over - killed_at:.1f} s, batch finished {finished_after:.1f} s after the kill "
        f"(RUN_STALE_SECONDS {settings.RUN_STALE_SECONDS:g}, SWEEP_INTERVAL {settings.SWEEP_INTERVAL:g})"
    )
    assert batch.status == "succeeded" and finished_after <= 60
    assert comparable(batch) == expected  # every row, in order, each link once
    assert taken_over - killed_at <= 30


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_a_run_killed_in_this_process_is_taken_over_by_the_next_local_run(sandbox, settings, tmp_path, sent):
    """`generate_links` on a batch left running by a killed run makes the chunks not done, not the rest."""
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 1500)
    expected = comparable(make(template, path, settings, chunk_rows=10**9, jobs=1))
    batch = make(template, path, settings, chunk_rows=500, jobs=None)
    services.link_batch_process(batch_id=batch.pk, jobs=None)  # chunks made, their messages not consumed here
    first = LinkChunk.objects.get(batch=batch, index=0)
    services.link_chunk_process(chunk_id=first.pk)
    LinkChunk.objects.filter(batch=batch, index=1).update(status="running", attempt=1, heartbeat_at=first.queued_at)
    # What the killed run stored just before it died, never recorded in its chunk row.
    default_storage.save(batch.sibling_path("chunks/00001-1.csv"), ContentFile(b"half a chunk"))
    settings.RUN_STALE_SECONDS = 0
    batch = services.link_batch_process(batch_id=batch.pk, jobs=1)
    assert comparable(batch) == expected
    assert batch.attempt == 1
    assert default_storage.listdir(batch.sibling_path("chunks")) == ([], [])  # nothing left behind


def test_a_missing_input_file_fails_the_batch_with_the_reason(sandbox, settings, tmp_path):
    batch = make(demo_template(), campaign(tmp_path / "c.csv", 10), settings, chunk_rows=100, jobs=None)
    default_storage.delete(batch.input_file.name)
    batch = services.link_batch_process(batch_id=batch.pk, jobs=1)
    assert (batch.status, batch.error) == ("failed", services.MISSING_INPUT)


@pytest.fixture
def sent(monkeypatch):
    """The tasks the services send, recorded instead of sent: no worker of the session may take them here."""
    tasks: list[tuple] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=(), **options: tasks.append((name, *args)))
    return tasks


def test_the_sweeper_sends_again_what_was_lost(sandbox, settings, tmp_path, sent):
    settings.RUN_STALE_SECONDS = 60
    template = demo_template()
    queued = make(template, campaign(tmp_path / "a.csv", 10), settings, chunk_rows=100, jobs=None)
    running = make(template, campaign(tmp_path / "b.csv", 300), settings, chunk_rows=100, jobs=None)
    services.link_batch_process(batch_id=running.pk, jobs=None)
    long_ago = queued.queued_at - timedelta(minutes=5)
    LinkBatch.objects.filter(pk=queued.pk).update(queued_at=long_ago)
    LinkBatch.objects.filter(pk=running.pk).update(heartbeat_at=long_ago)
    chunks = list(LinkChunk.objects.filter(batch=running).order_by("index"))
    LinkChunk.objects.filter(pk=chunks[0].pk).update(status="running", attempt=1, heartbeat_at=long_ago)
    LinkChunk.objects.filter(pk=chunks[1].pk).update(queued_at=long_ago)

    sent.clear()
    assert services.link_batches_sweep() == {"batches": 1, "chunks": 2, "assemblies": 0}
    assert sorted(sent) == sorted(
        [
            ("links.process_link_batch", queued.pk),
            ("links.process_link_chunk", chunks[0].pk),
            ("links.process_link_chunk", chunks[1].pk),
        ]
    )
    assert LinkChunk.objects.get(pk=chunks[0].pk).status == "queued"
    # Sent once: the next sweep leaves them alone until they are stale again.
    assert services.link_batches_sweep() == {"batches": 0, "chunks": 0, "assemblies": 0}

    # The chunks made (as the re-sent tasks would), the batch assembles.
    for chunk in chunks:
        services.link_chunk_process(chunk_id=chunk.pk)
    running.refresh_from_db()
    assert running.status == "succeeded" and running.rows_done == 300


@pytest.mark.worker
def test_a_manager_cancels_a_running_batch_it_stops_within_seconds_and_runs_again(
    celery_worker_process, live_sandbox, manager, viewer, client, settings, tmp_path
):
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 40_000)
    batch = make(template, path, settings, chunk_rows=1000, jobs=None)
    services.link_batch_process(batch_id=batch.pk, jobs=None)
    wait_for(
        lambda: LinkChunk.objects.filter(batch=batch, status="done").count() >= 2,
        timeout=120,
        interval=0.05,
        message="two chunks done",
    )

    client.force_login(viewer)
    assert client.post(f"/links/{batch.pk}/cancel/").status_code == 403
    assert LinkBatch.objects.get(pk=batch.pk).status == "running"
    client.force_login(manager)
    page = client.post(f"/links/{batch.pk}/cancel/", follow=True)
    assert "Cancelled. The links made until now are kept" in page.content.decode()
    cancelled_at = time.monotonic()

    # Running chunks stop at their next beat: none is done after the cancel, no heartbeat moves any more.
    wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).output_file, timeout=30, message="the partial result")
    time.sleep(max(0.0, cancelled_at + 3 - time.monotonic()))
    beats = dict(LinkChunk.objects.filter(batch=batch).values_list("index", "heartbeat_at"))
    time.sleep(2)
    assert dict(LinkChunk.objects.filter(batch=batch).values_list("index", "heartbeat_at")) == beats
    batch.refresh_from_db()
    assert batch.status == "cancelled" and batch.output_file.name.endswith("output-partial.csv")
    # The chunks done, and those stopped part of the way, kept the rows they made.
    made = sum(LinkChunk.objects.filter(batch=batch).exclude(output_file="").values_list("rows_done", flat=True))
    assert 0 < batch.rows_done == made < 40_000

    # The partial result holds every input row: those made, each one right for its row number, and the rest
    # with an empty link and the reason.
    rows = read_result(batch.output_file.name)[1:]
    assert len(rows) == 40_000
    assert sum(row[-1] == "not made: the upload was cancelled" for row in rows) == 40_000 - made
    keys = link_keys()
    numbers = [decode(row[-2].rsplit("/", 1)[1], keys).row for row in rows if row[-2]]
    assert numbers == sorted(numbers)
    page = client.get(f"/links/{batch.pk}/").content.decode()
    assert "Download partial links" in page and "Run again" in page

    client.post(f"/links/{batch.pk}/rerun/")
    wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=180, message="the re-run")
    batch.refresh_from_db()
    assert (batch.status, batch.rows_done, batch.attempt) == ("succeeded", 40_000, 2)
    assert len(read_result(batch.output_file.name)) == 40_001


@pytest.mark.worker
def test_killed_database_connections_mid_batch_end_in_a_finished_batch(
    celery_worker_process, live_sandbox, settings, tmp_path
):
    template = demo_template()
    path = campaign(tmp_path / "campaign.csv", 100_000)
    expected = comparable(make(template, path, settings, chunk_rows=10**9, jobs=1))
    batch = make(template, path, settings, chunk_rows=2000, jobs=None)
    services.link_batch_process(batch_id=batch.pk, jobs=None)
    # Kill from the moment a chunk is taken: on a quiet machine the whole batch takes only a few seconds.
    wait_for(
        lambda: batch.chunks.filter(status="running").exists(),
        timeout=120,
        interval=0.02,
        message="the worker to get going",
    )
    killed = 0
    while killed < 4 and not LinkBatch.objects.get(pk=batch.pk).is_finished:
        # Again and again, so that the writes of chunks are hit and not only the gaps between them.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            killed += sum(1 for (done,) in cursor.fetchall() if done)
        time.sleep(0.1)
    assert killed
    wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=120, message="the batch to finish")
    batch.refresh_from_db()
    # The chunks whose connection was killed were made again on a new one (failing with the reason after
    # three tries would be allowed too; "running" for ever is what must never happen).
    assert comparable(batch) == expected, batch.error


@pytest.mark.django_db
def test_the_batch_page_says_completed_with_errors_and_shows_the_reasons(sandbox, manager, client, settings, tmp_path):
    batch = make(demo_template(), campaign(tmp_path / "c.csv", 300), settings, chunk_rows=100, jobs=1)
    assert (batch.status, batch.status_label, batch.status_tone) == ("succeeded", "completed with 3 errors", "partial")
    client.force_login(manager)
    page = client.get(f"/links/{batch.pk}/").content.decode()
    assert "completed with 3 errors" in page and "status-partial" in page
    assert "Errors and warnings, by reason" in page
    assert "the same values as row N." in page and "97, 194, 291" in page
    assert "Row 50: Warning: the same values as row 1." in page


def test_the_summary_groups_by_reason_without_values_and_stays_bounded():
    summary = services.RowSummary()
    summary.add("error", "Email: “anna” is not a valid email address.", 7)
    summary.add("error", "Email: “bob@” is not a valid email address.", 3)
    for number in range(100):
        summary.add("warning", f"Warning: odd value {number} words{'x' * number}", 10 + number)
    entries = summary.as_json()
    assert entries[0] == {
        "kind": "error",
        "reason": "Email: “…” is not a valid email address.",
        "count": 2,
        "rows": [3, 7],
        "example": "Email: “bob@” is not a valid email address.",
        "example_row": 3,
    }
    assert len(entries) == services.SUMMARY_REASONS + 1
    other = next(entry for entry in entries if entry["reason"] == services.OTHER_REASONS)
    assert other["count"] == 100 - (services.SUMMARY_REASONS - 1)


def test_two_assemblies_at_once_write_one_result(one_process, settings, sent, monkeypatch, run_at_a_barrier):
    """The last chunk's worker and an assembly sent again by the sweeper race: one writes, the other gives up."""
    template, path, expected = one_process
    batch = make(template, path, settings, chunk_rows=300, jobs=None)
    services.link_batch_process(batch_id=batch.pk, jobs=None)
    with monkeypatch.context() as patched:
        patched.setattr(processing, "link_batch_finish", lambda **_: None)  # the chunks made, the assembly not yet
        for chunk_id in LinkChunk.objects.filter(batch=batch).values_list("pk", flat=True):
            services.link_chunk_process(chunk_id=chunk_id)
    assert LinkBatch.objects.get(pk=batch.pk).status == "running"

    def assemble(barrier):
        barrier.wait()
        services.link_batch_finish(batch_id=batch.pk)

    _, errors = run_at_a_barrier(2, assemble)
    assert errors == []
    batch.refresh_from_db()
    assert comparable(batch) == expected
    assert sorted(default_storage.listdir(batch.sibling_path(""))[1]) == ["errors.csv", "input.csv", "output.csv"]


@pytest.mark.django_db
def test_the_repeats_query_in_parts_gives_the_whole_answer():
    # Each part hashes only its holders' keys (on a core of its own); together they answer as the whole query.
    from links.services.chunk import _RowKeys

    keys = _RowKeys(987654)
    keys.create()
    try:
        holders = [f"{n:032x}" for n in range(0, 4000, 7)]
        # Three chunks' first rows: every holder in the first, every other one again in the second, every
        # third one in the third, some of those in all three.
        keys.add({holder: (n + 1, n % 2 == 0) for n, holder in enumerate(holders)})
        second = {holder: (10_000 + n, n % 2 == 0) for n, holder in enumerate(holders) if n % 2 == 0}
        third = {holder: (20_000 + n, n % 2 == 0) for n, holder in enumerate(holders) if n % 3 == 0}
        keys.add(second)
        keys.add(third)
        whole = keys.repeated()
        assert len(whole) == len(second) + len(third)
        for parts in (2, 3, 4):
            answers = [keys.repeated(part=part, parts=parts) for part in range(parts)]
            assert sum(len(answer) for answer in answers) == len(whole)
            assert {row: first for answer in answers for row, first in answer.items()} == whole
            assert all(answers)  # every part holds some: the split is by the key
    finally:
        keys.drop()


@pytest.mark.django_db(transaction=True)
def test_a_chunk_whose_requeue_meets_a_killed_connection_is_queued_on_a_fresh_one(sandbox, settings, tmp_path):
    """Backends killed one after another (a failover): the connection that broke under the chunk is replaced,
    and if the new one is killed too before the chunk is back in the queue, a third one puts it there, rather
    than leaving it running under its attempt with no task, waiting for the sweep."""
    batch = make(demo_template(), campaign(tmp_path / "campaign.csv", 10), settings, chunk_rows=10, jobs=None)
    chunk = LinkChunk.objects.create(batch=batch, index=0, start=0, row_before=0, status="running", attempt=1)
    terminate_own_backend()  # the connection the requeue would write on

    assert processing._requeue_chunk(chunk) is True
    chunk.refresh_from_db()
    assert (chunk.status, chunk.attempt) == ("queued", 1)


@pytest.mark.django_db(transaction=True)
def test_a_batch_whose_failure_meets_a_killed_connection_is_marked_failed_on_a_fresh_one(
    sandbox, settings, tmp_path, monkeypatch, caplog
):
    """The failure's write breaks under it (a failover, the backend killed again): it is written on a new
    connection, so staff see the sentence instead of a batch running for minutes more."""
    batch = make(demo_template(), campaign(tmp_path / "campaign.csv", 10), settings, chunk_rows=10, jobs=None)
    LinkBatch.objects.filter(pk=batch.pk).update(status="running")
    real_update = QuerySet.update
    kills = []

    def killed_first(queryset, **changes):
        if queryset.model is LinkBatch and changes.get("status") == "failed" and not kills:
            kills.append(1)
            terminate_own_backend()  # after close_old_connections: the write's own connection breaks
        return real_update(queryset, **changes)

    monkeypatch.setattr(QuerySet, "update", killed_first)
    processing._fail(batch=batch, message="The upload could not be read.")

    batch.refresh_from_db()
    assert kills == [1]
    assert (batch.status, batch.error) == ("failed", "The upload could not be read.")
    # The write went again on a new connection (not, say, before the kill took effect).
    assert f"Writing link batch {batch.pk} as failed met a broken database connection" in caplog.text
