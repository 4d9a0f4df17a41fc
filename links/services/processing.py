"""Running a queued batch: cut into chunks, each made by a Celery worker or a local process; the batch
failed with a sentence for staff when it cannot go on."""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from collections.abc import Callable

from celery.exceptions import SoftTimeLimitExceeded
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, close_old_connections, connections, transaction
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.failures import failure_message, on_a_working_connection
from background.recovery import MAX_ATTEMPTS, Heartbeat, requeue_stale, take

from ..csv_files import (
    CsvFormatError,
)
from ..models import LinkBatch, LinkChunk
from .assembly import _discard_chunks, link_batch_finish
from .chunk import _Counts, _dialect, _make_chunk, _plan, _RowKeys, _Stopped

logger = logging.getLogger(__name__)

# The tasks this module sends (links/tasks.py), by name: see background.enqueue.
BATCH_TASK = "links.process_link_batch"
CHUNK_TASK = "links.process_link_chunk"
FINISH_TASK = "links.finish_link_batch"

# --- processing ------------------------------------------------------------------------------------------------
# A batch is made in chunks (LinkChunk rows, LINKS_CHUNK_ROWS rows each) that any worker on any host takes:
# every file goes through default_storage, every state through the database. Each chunk writes its output
# rows to storage; the last chunk to finish assembles them in input order. Duplicates within the file
# ("the same values as row N") need the whole file: a chunk marks those within itself and leaves its first
# rows' keys in a table of the batch, and the assembly puts right the few rows whose first sits in an
# earlier chunk. `--jobs` runs the same chunks in local processes, so every path gives the same file.
ProgressCallback = Callable[[int, int], None]


def link_batch_process(
    *, batch_id: int, jobs: int | None = 1, on_progress: ProgressCallback | None = None
) -> LinkBatch:
    """Make the links of a queued batch: cut it into chunks and have them made.

    jobs=None hands the chunks to the Celery workers (the task path) and returns at once; jobs=1 makes them
    here, one after the other; jobs=N in N local processes. A batch already running is taken over by a local
    run (its chunks not done, or whose worker stopped beating, are made here) and left alone by the task
    path, whose sweeper looks after it. A finished batch is left alone.
    """
    batch = LinkBatch.objects.select_related("template").get(pk=batch_id)
    if batch.status == LinkBatch.Status.QUEUED:
        try:
            chunk_ids = _start(batch)
        except _Stopped:
            return LinkBatch.objects.get(pk=batch.pk)
        except CsvFormatError as exc:
            _fail(batch=batch, message=str(exc))
            return LinkBatch.objects.get(pk=batch.pk)
        except FileNotFoundError:
            _fail(batch=batch, message=MISSING_INPUT)
            return LinkBatch.objects.get(pk=batch.pk)
    elif batch.status == LinkBatch.Status.RUNNING and jobs is not None:
        # The chunks whose worker stopped beating go back to the queue (the sweep's own take-over, without
        # sending them: they are made here), and are made here with those still waiting.
        requeue_stale(batch.chunks.all(), lambda chunk: None)
        chunk_ids = list(batch.chunks.filter(status=LinkChunk.Status.QUEUED).values_list("pk", flat=True))
    else:
        return batch
    if jobs is None:
        for chunk_id in chunk_ids:
            enqueue_after_commit(CHUNK_TASK, chunk_id)
    else:
        _run_locally(batch.pk, chunk_ids, jobs=jobs, on_progress=on_progress)
    return LinkBatch.objects.select_related("template").get(pk=batch.pk)


MISSING_INPUT = "The uploaded file is no longer in storage; upload it again."


def _start(batch: LinkBatch) -> list[int]:
    """A new run of the batch: its counts start afresh, its chunks and their files are made anew."""
    dialect = _dialect(batch)
    plan = batch.plan
    if not plan:  # a batch uploaded before chunks existed
        with default_storage.open(batch.input_file.name, "rb") as binary:
            plan = _plan(binary, dialect)
    elif not default_storage.exists(batch.input_file.name):
        raise FileNotFoundError(batch.input_file.name)
    _discard_chunks(batch)
    for name in (batch.output_file.name, batch.errors_file.name):
        if name:  # the result of an earlier run (a partial one after a cancel): replaced by this run's
            default_storage.delete(name)
    attempt = batch.attempt + 1
    with transaction.atomic():
        started = LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt, status=LinkBatch.Status.QUEUED).update(
            attempt=attempt,
            status=LinkBatch.Status.RUNNING,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            finished_at=None,
            error="",
            summary=[],
            output_file="",
            errors_file="",
            plan=plan,
            **_Counts().as_fields(),
        )
        if not started:
            raise _Stopped()  # another run took it over in between
        ends = [start for start, _ in plan[1:]] + [None]
        chunks = LinkChunk.objects.bulk_create(
            LinkChunk(batch_id=batch.pk, index=index, start=start, end=end, row_before=row_before)
            for index, ((start, row_before), end) in enumerate(zip(plan, ends, strict=True))
        )
        if len(chunks) > 1:
            _RowKeys(batch.pk).create()
    batch.attempt = attempt
    return [chunk.pk for chunk in chunks]


def _run_locally(batch_id: int, chunk_ids: list[int], *, jobs: int, on_progress: ProgressCallback | None) -> None:
    """The chunks in this process (jobs=1) or in `jobs` forked processes, each taking the next chunk."""
    total = LinkBatch.objects.values_list("rows_total", flat=True).get(pk=batch_id)

    def progress() -> None:
        if on_progress:
            on_progress(LinkBatch.objects.values_list("rows_done", flat=True).get(pk=batch_id), total)

    if jobs <= 1 or len(chunk_ids) <= 1:
        for chunk_id in chunk_ids:
            link_chunk_process(chunk_id=chunk_id)
            progress()
    else:
        # Forked children must not share the parent's database connection: each opens its own.
        connections.close_all()
        with multiprocessing.get_context("fork").Pool(
            min(jobs, len(chunk_ids)), initializer=_forget_connections
        ) as pool:
            pending = pool.map_async(_chunk_in_child, chunk_ids, chunksize=1)
            while not pending.ready():
                pending.wait(0.5)
                progress()
            pending.get()
    if LinkBatch.objects.filter(pk=batch_id, status=LinkBatch.Status.CANCELLED, output_file="").exists():
        link_batch_finish(batch_id=batch_id)  # the partial result of a batch cancelled while it ran here
    progress()


_INHERITED_CONNECTIONS: list = []


def _forget_connections() -> None:
    """In a forked child: never use (nor close) a database connection inherited from the parent — its socket
    is the parent's (close_all cannot reach a connection made in another context, e.g. a greenlet's)."""
    for wrapper in connections.all(initialized_only=True):
        if wrapper.connection is not None:
            _INHERITED_CONNECTIONS.append(wrapper.connection)  # kept referenced: closing it ends the parent's
            wrapper.connection = None


def _chunk_in_child(chunk_id: int) -> None:
    link_chunk_process(chunk_id=chunk_id)
    connections.close_all()


def link_chunk_process(*, chunk_id: int, tries: int = 0) -> None:
    """Make one chunk of a running batch; the worker that makes the last one assembles the batch.

    Safe to deliver twice: a chunk is only taken while queued (background.recovery.take), and a run whose
    chunk was handed to another worker in the meantime (it stopped beating) stops at its next look without
    writing anything. A chunk taken more than MAX_ATTEMPTS times (each take after the first follows a worker
    that died in it or a connection that broke) fails the batch instead of being handed on for ever.
    """
    try:
        taken = _take_chunk(chunk_id)
    except (OperationalError, InterfaceError):
        # No connection to take it with. Sent again at once a few times (a killed backend: the next connection
        # works); a database that stays away leaves the chunk queued in its row, for the sweep.
        logger.exception("Link chunk %s: database error while taking it", chunk_id)
        close_old_connections()
        if tries < RESEND_TRIES:
            enqueue_after_commit(CHUNK_TASK, chunk_id, tries=tries + 1)
        return
    if taken is None:
        return
    chunk, heartbeat = taken
    batch = chunk.batch
    if chunk.attempt > MAX_ATTEMPTS:
        _fail(batch=batch, message=GAVE_UP.format(attempts=MAX_ATTEMPTS, first=chunk.row_before + 1))
        return
    try:
        last = _make_chunk(chunk, heartbeat)
    except _Stopped:
        logger.info("Link batch %s, chunk %s: stopped (cancelled, failed or taken over).", batch.pk, chunk.index)
        # Cancelled: the last chunk to stop assembles the partial result (the cancel's own assembly waits
        # for the chunks still running); otherwise this finds nothing to do.
        link_batch_finish_or_resend(batch_id=batch.pk, tries=0)
        return
    except (OperationalError, InterfaceError):
        # The database connection broke (a restart, a killed backend): the chunk goes back to the queue under
        # the attempt it used, and out again at once, on a fresh connection. MAX_ATTEMPTS bounds the round.
        logger.exception("Link batch %s, chunk %s: database error; queued again", batch.pk, chunk.index)
        if _requeue_chunk(chunk):
            enqueue_after_commit(CHUNK_TASK, chunk.pk)
        return
    except CsvFormatError as exc:
        _fail(batch=batch, message=str(exc))
        return
    except FileNotFoundError:
        _fail(batch=batch, message=MISSING_INPUT)
        return
    except SoftTimeLimitExceeded:
        _fail(batch=batch, message=TOO_LONG.format(reference=_logged_reference(batch)))
        return
    except Exception as exc:  # noqa: BLE001 - a full disk, or a bug: a sentence for staff, the traceback logged
        _fail(batch=batch, message=failure_message(exc, what=WHAT, subject=f"Link batch {batch.pk}", logger=logger))
        return
    if last:
        link_batch_finish_or_resend(batch_id=batch.pk, tries=0)


def link_batch_finish_or_resend(*, batch_id: int, tries: int) -> None:
    """Assemble the batch; when the database connection breaks meanwhile, send the assembly again at once (a
    few times), else it waits for the sweep, which assembles every running batch whose chunks are all done."""
    try:
        link_batch_finish(batch_id=batch_id)
    except (OperationalError, InterfaceError):
        logger.exception("Link batch %s: database error while assembling", batch_id)
        close_old_connections()
        if tries < RESEND_TRIES:
            enqueue_after_commit(FINISH_TASK, batch_id, tries=tries + 1)
    except Exception as exc:  # noqa: BLE001 - a full disk, or a bug: a sentence for staff, the traceback logged
        message = failure_message(exc, what=WHAT, subject=f"Link batch {batch_id}", logger=logger)
        _fail(batch=LinkBatch(pk=batch_id), message=message)


# A task that found no database connection sends itself again at once this many times; after that the row
# waits for the recovery sweep (every SWEEP_INTERVAL). Never a delayed message (a worker holding one dies
# when Redis goes away: docs/operations.md).
RESEND_TRIES = 3


def _take_chunk(chunk_id: int) -> tuple[LinkChunk, Heartbeat] | None:
    """The chunk, now running under a new attempt number, and its heartbeat (which beats for the batch too);
    None when it is gone (the batch was started again), not queued (taken already, done) or its batch is no
    longer running."""
    chunk = LinkChunk.objects.select_related("batch__template").filter(pk=chunk_id).first()
    if chunk is None:
        return None
    running = LinkBatch.objects.filter(pk=chunk.batch_id, status=LinkBatch.Status.RUNNING)
    heartbeat = take(chunk, among=LinkChunk.objects.filter(batch__in=running), also=running, rows_done=0)
    return None if heartbeat is None else (chunk, heartbeat)


def _send_chunk(chunk: LinkChunk) -> None:
    enqueue_after_commit(CHUNK_TASK, chunk.pk)


def _requeue_chunk(chunk: LinkChunk) -> bool:
    """Put a chunk whose connection broke back in the queue, under the attempt it used. A chunk left running
    under a live attempt with no task to make it would wait minutes for the sweep, so the write goes on a
    fresh connection, and on another when that one breaks too."""
    close_old_connections()  # a connection that failed is closed here, so the write below opens a new one
    queued = LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING)
    return bool(
        on_a_working_connection(
            lambda: queued.update(
                status=LinkChunk.Status.QUEUED, queued_at=timezone.now(), heartbeat_at=timezone.now()
            ),
            tries=RESEND_TRIES,
            subject=f"link chunk {chunk.pk} back in the queue",
        )
    )


WHAT = "while making the links"
TOO_LONG = "Making the links took too long and was stopped (reference {reference}). Run it again."
GAVE_UP = (
    "A worker stopped {attempts} times while making the rows from row {first} on, so the batch was stopped. "
    "Run it again; if it stops again, contact support."
)


def _logged_reference(batch: LinkBatch) -> str:
    reference = uuid.uuid4().hex[:8]
    logger.exception("Link batch %s failed (reference %s)", batch.pk, reference)
    return reference


def _fail(*, batch: LinkBatch, message: str) -> None:
    """Mark the batch failed with a sentence for staff, on a working connection even if this one broke (and on
    another if that one breaks too): a batch left running would show staff a bar that does not move until the
    recovery sweep, minutes later, sends it again only to fail again."""
    close_old_connections()  # a connection that failed is closed here, so the write below opens a new one
    unfinished = LinkBatch.objects.filter(pk=batch.pk, status__in=[LinkBatch.Status.QUEUED, LinkBatch.Status.RUNNING])
    on_a_working_connection(
        lambda: unfinished.update(status=LinkBatch.Status.FAILED, error=message, finished_at=timezone.now()),
        tries=RESEND_TRIES,
        subject=f"link batch {batch.pk} as failed",
    )
    _RowKeys(batch.pk).drop()  # the chunks' rows and files stay until a re-run replaces them
