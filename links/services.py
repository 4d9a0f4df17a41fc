"""Writes for campaign CSV uploads: accept a file, confirm its mapping, turn every row into a link.

The upload page, the Celery task and `manage.py generate_links` all go through these functions, so a file
gives the same output whichever way it came in.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import IO

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, close_old_connections, connection, connections, transaction
from django.db.models import Q, Subquery, Sum
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.heap import existing_objects_out_of_gc
from background.recovery import requeue_stale, resend_waiting, take
from members.selectors import external_ids_in_use
from templates_sync.models import PassTemplate

from . import selectors
from .csv_files import (
    CsvDialect,
    CsvFormatError,
    ResultWriter,
    RowCount,
    check_size,
    count_rows,
    read_chunk,
    read_rows,
    sniff,
)
from .models import LinkBatch, LinkBatchEvent, LinkChunk
from .rows import Row, RowRules
from .tokens import TokenTooLong

logger = logging.getLogger(__name__)

SNIFF_BYTES = 64 * 1024
LINK_COLUMN = "smartpass_link"
ERROR_COLUMN = "error"
# The tasks this module sends (links/tasks.py), by name: see background.enqueue.
BATCH_TASK = "links.process_link_batch"
CHUNK_TASK = "links.process_link_chunk"
FINISH_TASK = "links.finish_link_batch"


class LinkUploadError(ValueError):
    """An upload or mapping that cannot be used; the message is a sentence for the person who sent it."""


# --- upload ----------------------------------------------------------------------------------------------------
def link_batch_create(
    *,
    template: PassTemplate,
    uploaded_by,
    file: File,
    delimiter: str | None = None,
    original_name: str | None = None,
    via: str = LinkBatch.Via.PAGE,
    single_use: bool = False,
) -> LinkBatch:
    """Check an uploaded CSV from end to end and store it as a batch waiting for its column mapping.

    `single_use`: one pass per row (the first claim of a row's link issues, every later one shows that pass).

    The whole file is read once here, so every file-level problem (size, encoding, delimiter, row and column
    limits, a quotation mark never closed) is reported on the upload form instead of failing later in a worker.
    """
    reason = template.issue_refusal_reason
    if reason:
        raise LinkUploadError(reason)
    name = os.path.basename(original_name or getattr(file, "name", "") or "upload.csv")[:255] or "upload.csv"
    binary = getattr(file, "file", file)  # the underlying binary stream: TextIOWrapper needs a real one
    try:
        check_size(file.size, max_bytes=settings.LINKS_MAX_UPLOAD_BYTES)
        binary.seek(0)
        dialect = sniff(binary.read(SNIFF_BYTES), delimiter=delimiter or None)
        binary.seek(0)
        header, rows = read_rows(binary, dialect, max_columns=settings.LINKS_MAX_COLUMNS)
        # Where each chunk of the file will start, found in this same reading: workers then seek there.
        counted = _count_rows(binary, dialect, start=rows.offset, width=len(header))
    except CsvFormatError as exc:
        raise LinkUploadError(str(exc)) from None
    # Empty rows come back in the result with an error; a file of nothing else is refused here instead of
    # giving a result file that holds errors only.
    if not counted.filled:
        raise LinkUploadError("The file has column names but no rows; add one row per pass holder.")
    binary.seek(0)
    batch = LinkBatch(
        template=template,
        uploaded_by=uploaded_by,
        created_via=via,
        original_name=name,
        size_bytes=file.size,
        encoding=dialect.encoding,
        delimiter=dialect.delimiter,
        header=header,
        mapping=selectors.link_columns_auto_match(template=template, header=header),
        rows_total=counted.rows,
        single_use=single_use,
        plan=counted.starts,
    )
    batch.input_file.save("input.csv", File(binary), save=False)
    batch.save()
    return batch


def link_batch_confirm(
    *, batch: LinkBatch, mapping: Mapping[str, str], strict: bool = False, enqueue: bool = True
) -> LinkBatch:
    """Save the confirmed column mapping and queue the batch (the task goes out after the commit).

    `strict`: a row with an invalid optional value gets no link (by default its link leaves the value out).
    """
    if batch.status != LinkBatch.Status.UPLOADED:
        raise LinkUploadError("These links are already being made.")
    mapping = _usable_mapping(batch=batch, mapping=mapping)
    with transaction.atomic():
        updated = LinkBatch.objects.filter(pk=batch.pk, status=LinkBatch.Status.UPLOADED).update(
            mapping=mapping, strict=strict, status=LinkBatch.Status.QUEUED, queued_at=timezone.now()
        )
        if not updated:
            raise LinkUploadError("These links are already being made.")
        if enqueue:
            _enqueue(batch.pk)
    batch.refresh_from_db()
    return batch


def _usable_mapping(*, batch: LinkBatch, mapping: Mapping[str, str]) -> dict[str, str]:
    """The mapping without its empty choices; LinkUploadError when the template or the mapping cannot be used."""
    reason = batch.template.issue_refusal_reason
    if reason:
        raise LinkUploadError(reason)
    mapping = {column: target for column, target in mapping.items() if target}
    problems = selectors.link_mapping_problems(template=batch.template, header=batch.header, mapping=mapping)
    if problems:
        raise LinkUploadError(" ".join(problems))
    return mapping


def link_batch_rerun(*, batch: LinkBatch) -> LinkBatch:
    """Queue a failed or cancelled batch again, or one stuck "running" long after any time limit. The run
    starts afresh: new chunks, counts from zero, the earlier result files replaced."""
    if not link_batch_can_rerun(batch=batch):
        raise LinkUploadError("Only a failed or cancelled batch can be run again.")
    with transaction.atomic():
        LinkBatch.objects.filter(pk=batch.pk).update(status=LinkBatch.Status.QUEUED, queued_at=timezone.now(), error="")
        _enqueue(batch.pk)
    batch.refresh_from_db()
    return batch


def link_batch_can_rerun(*, batch: LinkBatch) -> bool:
    if batch.status in (LinkBatch.Status.FAILED, LinkBatch.Status.CANCELLED):
        return True
    if batch.status in (LinkBatch.Status.RUNNING, LinkBatch.Status.QUEUED):
        since = batch.started_at or batch.queued_at or batch.created_at
        limit = timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 1900) + 60)
        return since is not None and timezone.now() - since > limit
    return False


def _enqueue(batch_id: int) -> None:
    enqueue_after_commit(BATCH_TASK, batch_id)


# --- managing uploads -------------------------------------------------------------------------------------------
def link_batch_remap(*, batch: LinkBatch, mapping: Mapping[str, str], strict: bool, user) -> LinkBatch:
    """Change the columns of a finished (or failed) batch and make its links again.

    The new run replaces the output and error files once it has written them. Links already sent out keep
    working (they carry their values), and a single-use row keeps its pass: its key is the batch and row.
    """
    if not batch.is_finished:
        raise LinkUploadError("Only a batch that has finished (or failed) can get new columns.")
    mapping = _usable_mapping(batch=batch, mapping=mapping)
    with transaction.atomic():
        done = (LinkBatch.Status.SUCCEEDED, LinkBatch.Status.FAILED)
        finished = LinkBatch.objects.filter(pk=batch.pk, status__in=done)
        requeued = finished.update(
            mapping=mapping, strict=strict, status=LinkBatch.Status.QUEUED, queued_at=timezone.now(), error=""
        )
        if not requeued:
            raise LinkUploadError("These links are already being made again.")
        detail = {
            "old_mapping": batch.mapping,
            "new_mapping": mapping,
            "old_strict": batch.strict,
            "new_strict": strict,
        }
        _record_event(batch=batch, action=LinkBatchEvent.Action.REMAPPED, user=user, detail=detail)
        _enqueue(batch.pk)
    batch.refresh_from_db()
    return batch


def link_batch_delete(*, batch: LinkBatch, user) -> LinkBatchEvent:
    """Delete an upload and its files (input, links, errors), leaving an audit record that outlives it.

    Links already sent out keep working: they carry everything a claim needs. The files go only once the
    deletion is committed, so a rolled-back deletion loses nothing. A batch being processed is refused; one
    whose worker died (still "running" long after any time limit) may go.
    """
    if batch.is_processing and not link_batch_can_rerun(batch=batch):
        raise LinkUploadError("These links are still being made; wait until the batch has finished.")
    files = [name for name in (batch.input_file.name, batch.output_file.name, batch.errors_file.name) if name]
    detail = {
        "status": batch.status,
        "rows": batch.rows_total,
        "links": batch.links,
        "errors": batch.errors,
        "single_use": batch.single_use,
        "uploaded_at": batch.created_at.isoformat(),
        "uploaded_by": batch.uploaded_by.get_username() if batch.uploaded_by else batch.created_via,
    }
    with transaction.atomic():
        if not LinkBatch.objects.filter(pk=batch.pk).delete()[0]:
            raise LinkUploadError("This upload was deleted already.")
        event = _record_event(batch=batch, action=LinkBatchEvent.Action.DELETED, user=user, detail=detail)
        transaction.on_commit(lambda: _delete_files(files))
    return event


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            # The record says the upload is gone; a file left behind is for an operator to sweep, not an error.
            logger.warning("Could not delete the link batch file %s", name, exc_info=True)


def link_batch_download_record(*, batch: LinkBatch, kind: str, user) -> LinkBatchEvent:
    """Record that `user` downloaded one of the batch's files (`kind`: output, errors or input)."""
    return _record_event(batch=batch, action=LinkBatchEvent.Action.DOWNLOADED, user=user, file=kind)


def _record_event(*, batch: LinkBatch, action: str, user, file: str = "", detail: dict | None = None) -> LinkBatchEvent:
    return LinkBatchEvent.objects.create(
        batch_id=batch.pk,
        batch_name=batch.original_name,
        template_id=batch.template_id,
        action=action,
        file=file,
        detail=detail or {},
        by=user,
        by_name=user.get_username() if user is not None else "",
    )


# --- processing ------------------------------------------------------------------------------------------------
# A batch is made in chunks (LinkChunk rows, LINKS_CHUNK_ROWS rows each) that any worker on any host takes:
# every file goes through default_storage, every state through the database. Each chunk writes its output
# rows to storage; the last chunk to finish assembles them in input order. Duplicates within the file
# ("the same values as row N") need the whole file: a chunk marks those within itself and leaves its first
# rows' keys in a table of the batch, and the assembly puts right the few rows whose first sits in an
# earlier chunk. `--jobs` runs the same chunks in local processes, so every path gives the same file.
@dataclass
class _Counts:
    rows_done: int = 0
    links: int = 0
    errors: int = 0
    warnings: int = 0
    duplicates: int = 0
    existing_members: int = 0

    def as_fields(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: Mapping[str, int]) -> None:
        for name, value in other.items():
            setattr(self, name, getattr(self, name) + value)


ProgressCallback = Callable[[int, int], None]
# Rows checked between two looks at the database for existing members: few queries, flat memory.
GROUP_ROWS = 2000
EXISTING_MEMBER_NOTE = "Warning: a member with this External ID already exists; the link shows that pass."
# A chunk whose database connection broke is tried again this many times before the batch fails.
CHUNK_ATTEMPTS = 3


class _Stopped(Exception):
    """The batch was cancelled, failed or started again while a chunk was being made: the chunk stops."""


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
        stale = timezone.now() - timedelta(seconds=settings.LINKS_STALE_SECONDS)
        takeover = batch.chunks.exclude(status=LinkChunk.Status.DONE).filter(
            Q(status=LinkChunk.Status.QUEUED) | Q(heartbeat_at__lt=stale)
        )
        takeover.update(status=LinkChunk.Status.QUEUED, queued_at=timezone.now())
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


def _count_rows(binary: IO[bytes], dialect: CsvDialect, *, start: int, width: int) -> RowCount:
    return count_rows(
        binary,
        dialect,
        start=start,
        width=width,
        chunk_rows=settings.LINKS_CHUNK_ROWS,
        max_rows=settings.LINKS_MAX_ROWS,
    )


def _plan(binary: IO[bytes], dialect: CsvDialect) -> list[list[int]]:
    header, rows = read_rows(binary, dialect)
    return _count_rows(binary, dialect, start=rows.offset, width=len(header)).starts


def _dialect(batch: LinkBatch) -> CsvDialect:
    return CsvDialect(encoding=batch.encoding, delimiter=batch.delimiter, has_bom=batch.encoding == "utf-8-sig")


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


def link_chunk_process(*, chunk_id: int) -> None:
    """Make one chunk of a running batch; the worker that makes the last one assembles the batch.

    Safe to deliver twice: a chunk is only taken while queued, and a run whose chunk was handed to another
    worker in the meantime (it stopped beating) stops at its next beat without writing anything.
    """
    try:
        chunk = _take_chunk(chunk_id)
    except (OperationalError, InterfaceError):
        # No connection to take it with: the task goes out again (a chunk taken meanwhile ignores it).
        logger.exception("Link chunk %s: database error while taking it; sent again", chunk_id)
        close_old_connections()
        enqueue_after_commit(CHUNK_TASK, chunk_id, countdown=1)
        return
    if chunk is None:
        return
    batch = chunk.batch
    try:
        last = _make_chunk(chunk)
    except _Stopped:
        logger.info("Link batch %s, chunk %s: stopped (cancelled, failed or taken over).", batch.pk, chunk.index)
        return
    except (OperationalError, InterfaceError):
        # The database connection broke (a restart, a killed backend): a fresh one, and the chunk again.
        logger.exception("Link batch %s, chunk %s: database error", batch.pk, chunk.index)
        close_old_connections()
        if chunk.attempt < CHUNK_ATTEMPTS and _requeue_chunk(chunk):
            enqueue_after_commit(CHUNK_TASK, chunk.pk, countdown=1)
        else:
            _fail_with_reference(batch=batch, message=UNEXPECTED_FAILURE)
        return
    except CsvFormatError as exc:
        _fail(batch=batch, message=str(exc))
        return
    except FileNotFoundError:
        _fail(batch=batch, message=MISSING_INPUT)
        return
    except SoftTimeLimitExceeded:
        _fail_with_reference(batch=batch, message=TOO_LONG)
        return
    except Exception:  # noqa: BLE001 - any other bug: the batch fails with a reference to the logged traceback
        _fail_with_reference(batch=batch, message=UNEXPECTED_FAILURE)
        return
    if last:
        try:
            link_batch_finish(batch_id=batch.pk)
        except (OperationalError, InterfaceError):
            logger.exception("Link batch %s: database error while assembling; sent again", batch.pk)
            close_old_connections()
            enqueue_after_commit(FINISH_TASK, batch.pk, countdown=1)


def _take_chunk(chunk_id: int) -> LinkChunk | None:
    """The chunk, now running under a new attempt number; None when it is gone (the batch was started
    again), not queued (taken already, done) or its batch is no longer running."""
    chunk = LinkChunk.objects.select_related("batch__template").filter(pk=chunk_id).first()
    if chunk is None:
        return None
    running_batches = LinkChunk.objects.filter(batch__status=LinkBatch.Status.RUNNING)
    return chunk if take(chunk, among=running_batches, rows_done=0) is not None else None


def _send_chunk(chunk: LinkChunk) -> None:
    enqueue_after_commit(CHUNK_TASK, chunk.pk)


def _requeue_chunk(chunk: LinkChunk) -> bool:
    return bool(
        LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING).update(
            status=LinkChunk.Status.QUEUED, queued_at=timezone.now()
        )
    )


UNEXPECTED_FAILURE = (
    "Something went wrong while making the links (reference {reference}). Run it again or contact support."
)
TOO_LONG = "Making the links took too long and was stopped (reference {reference}). Run it again."


def _fail_with_reference(*, batch: LinkBatch, message: str) -> None:
    """Fail the batch with `message` naming a reference that is in the log beside the traceback."""
    reference = uuid.uuid4().hex[:8]
    logger.exception("Link batch %s failed (reference %s)", batch.pk, reference)
    _fail(batch=batch, message=message.format(reference=reference))


def _fail(*, batch: LinkBatch, message: str) -> None:
    """Mark the batch failed with a sentence for staff, on a working connection even if this one broke."""
    close_old_connections()  # a connection that failed is closed here, so the write below opens a new one
    LinkBatch.objects.filter(pk=batch.pk, status__in=[LinkBatch.Status.QUEUED, LinkBatch.Status.RUNNING]).update(
        status=LinkBatch.Status.FAILED, error=message, finished_at=timezone.now()
    )
    _RowKeys(batch.pk).drop()  # the chunks' rows and files stay until a re-run replaces them


# --- making a chunk --------------------------------------------------------------------------------------------
class _Beat:
    """The chunk's progress and heartbeat, written at most every LINKS_HEARTBEAT_SECONDS; raises _Stopped
    when the batch is no longer running (cancelled, failed) or the chunk was handed to another worker."""

    def __init__(self, chunk: LinkChunk) -> None:
        self.chunk = chunk
        self.interval = settings.LINKS_HEARTBEAT_SECONDS
        self.next_at = time.monotonic() + self.interval

    def __call__(self, rows_done: int) -> None:
        if time.monotonic() < self.next_at:
            return
        chunk, now = self.chunk, timezone.now()
        mine = LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING)
        if not mine.update(heartbeat_at=now, rows_done=rows_done):
            raise _Stopped()
        done = LinkChunk.objects.filter(batch_id=chunk.batch_id).values("batch_id").annotate(n=Sum("rows_done"))
        running = LinkBatch.objects.filter(pk=chunk.batch_id, status=LinkBatch.Status.RUNNING)
        if not running.update(heartbeat_at=now, rows_done=Subquery(done.values("n"))):
            raise _Stopped()
        self.next_at = time.monotonic() + self.interval


def _make_chunk(chunk: LinkChunk) -> bool:
    """Check and link the chunk's rows, store its output; True when it was the batch's last chunk."""
    batch = chunk.batch
    dialect = _dialect(batch)
    made = _ChunkRows(RowRules(batch), dialect.delimiter)
    beat = _Beat(chunk)
    with existing_objects_out_of_gc(), default_storage.open(batch.input_file.name, "rb") as binary:
        rows = read_chunk(
            binary, dialect, width=len(batch.header), start=chunk.start, end=chunk.end, row_before=chunk.row_before
        )
        check_many = made.rules.check_many
        group: list[tuple[int, list[str]]] = []
        for item in rows:
            group.append(item)
            if len(group) >= GROUP_ROWS:
                made.write(check_many(group))
                group = []
                beat(made.counts.rows_done)
        made.write(check_many(group))
    counts, summary, first_rows = made.counts, made.summary, made.first_rows
    output, errors = made.output, made.errors
    folder = batch.sibling_path(f"chunks/{chunk.index:05d}-{chunk.attempt}")
    output_name = output.store(folder + ".csv")
    errors_name = errors.store(folder + "-errors.csv")
    try:
        with transaction.atomic():
            # The batch row is locked while a chunk is marked done: chunks ending together count the rest
            # one after the other, so exactly one of them sees none left and assembles the batch.
            if not LinkBatch.objects.select_for_update().filter(pk=batch.pk, status=LinkBatch.Status.RUNNING).exists():
                raise _Stopped()
            if len(batch.plan) > 1:
                _RowKeys(batch.pk).add(first_rows)
            done = LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING).update(
                status=LinkChunk.Status.DONE,
                heartbeat_at=timezone.now(),
                rows_done=counts.rows_done,
                counts=counts.as_fields(),
                summary=summary.as_json(),
                output_file=output_name,
                errors_file=errors_name,
            )
            if not done:
                raise _Stopped()
            return not batch.chunks.exclude(status=LinkChunk.Status.DONE).exists()
    except BaseException:
        for name in (output_name, errors_name):
            default_storage.delete(name)
        raise


class _ChunkRows:
    """What a chunk made so far: its output and error rows, counts, summary, and the first row of each holder."""

    def __init__(self, rules: RowRules, delimiter: str) -> None:
        self.rules = rules
        self.output, self.errors = _ChunkFile(delimiter), _ChunkFile(delimiter)
        self.first_rows: dict[str, tuple[int, bool]] = {}  # digest → (first row with it here, by External ID)
        self.counts, self.summary = _Counts(), RowSummary()

    def write(self, group: list[Row]) -> None:
        rules, counts, summary, first_rows = self.rules, self.counts, self.summary, self.first_rows
        external_ids = [row.external_id for row in group if not row.error and row.external_id]
        in_use = external_ids_in_use(template=rules.template, external_ids=external_ids) if external_ids else ()
        make_link = rules.link
        output: list[list[str]] = []
        errors: list[list[str]] = []
        for row in group:
            link = ""
            if not row.error:
                try:
                    link = make_link(row)
                except TokenTooLong as exc:
                    row.error = str(exc)
            if row.error:
                counts.errors += 1
                summary.add(RowSummary.ERROR, row.error, row.number)
                cells = row.cells + ["", row.error]
                output.append(cells)
                errors.append(cells)
                continue
            number, notes = row.number, row.notes
            first = first_rows.setdefault(row.digest, (number, bool(row.external_id)))[0]
            if first != number:
                counts.duplicates += 1
                notes.append(_duplicate_note(bool(row.external_id), first))
            if in_use and row.external_id in in_use:
                counts.existing_members += 1
                notes.append(EXISTING_MEMBER_NOTE)
            if notes:
                counts.warnings += 1
                for note in notes:
                    summary.add(RowSummary.WARNING, note, number)
                output.append(row.cells + [link, " ".join(notes)])
            else:
                output.append(row.cells + [link, ""])
        counts.rows_done += len(group)
        counts.links += len(group) - len(errors)
        self.output.write_rows(output)
        if errors:
            self.errors.write_rows(errors)


def _duplicate_note(by_external_id: bool, first: int) -> str:
    return f"Warning: the same {'External ID' if by_external_id else 'values'} as row {first}."


class _ChunkFile:
    """A chunk's output rows (no header, no BOM), kept in memory: a chunk is a few MB whatever the file's
    size, and no temporary file is ever left behind on the worker's disk. Rows are written as text a group
    at a time and encoded once per group: encoding row by row costs more than the rest of the writing."""

    def __init__(self, delimiter: str) -> None:
        self.buffer = io.BytesIO()
        self.writer = ResultWriter(io.StringIO(), delimiter=delimiter, header=None)

    def write_rows(self, rows: list[list[str]]) -> None:
        self.buffer.write(self.writer.rows_text(rows).encode("utf-8"))

    def store(self, name: str) -> str:
        self.buffer.seek(0)
        return default_storage.save(name, File(self.buffer, name=name))


class _RowKeys:
    """The first row of each distinct holder in each chunk, in a table of the batch's own.

    Chunks run in any order on any host, so the first row with given values may sit in a chunk made after
    the row repeating it. Each chunk adds its first rows (one COPY, in the transaction that marks it done);
    the assembly asks for the keys that more than one chunk holds. A table per batch, unlogged and without
    an index, is the cheapest to fill and is dropped whole when the batch is assembled.
    """

    def __init__(self, batch_id: int) -> None:
        self.table = f"links_rowkeys_{int(batch_id)}"

    def create(self) -> None:
        postgres = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            cursor.execute(
                f"CREATE {'UNLOGGED ' if postgres else ''}TABLE {self.table} "
                f"(key {'uuid' if postgres else 'text'} NOT NULL, first_row integer NOT NULL, by_id boolean NOT NULL)"
            )

    def drop(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")

    def add(self, first_rows: Mapping[str, tuple[int, bool]]) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                data = "".join([f"{key}\t{row}\t{'t' if by_id else 'f'}\n" for key, (row, by_id) in first_rows.items()])
                # psycopg's copy is not wrapped by Django: its errors become Django's here, like every query's.
                with (
                    connection.wrap_database_errors,
                    cursor.copy(f"COPY {self.table} (key, first_row, by_id) FROM STDIN") as copy,
                ):
                    copy.write(data)
            else:
                cursor.executemany(
                    f"INSERT INTO {self.table} (key, first_row, by_id) VALUES (%s, %s, %s)",
                    [(key, row, by_id) for key, (row, by_id) in first_rows.items()],
                )

    def repeated(self) -> dict[int, tuple[int, bool]]:
        """Chunk-first rows whose holder came earlier in another chunk → (that earlier row, by External ID)."""
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL work_mem = '64MB'")  # a million keys hash in memory, not on disk
                # One hash aggregate: the parallel plan (partial aggregates, sorted and merged) took about 1.5×
                # as long for a million keys, and the chunks' processes want the other cores anyway.
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute(
                f"SELECT k.first_row, g.first_row, k.by_id FROM {self.table} k JOIN (SELECT key, MIN(first_row) AS "
                f"first_row FROM {self.table} GROUP BY key HAVING COUNT(*) > 1) g ON k.key = g.key "
                "WHERE k.first_row <> g.first_row"
            )
            return {row: (first, bool(by_id)) for row, first, by_id in cursor.fetchall()}


# --- summary ---------------------------------------------------------------------------------------------------
# Messages name the values they are about (“…”) and rows and counts (digits): without them, the reason.
_QUOTED_RE = re.compile(r"“[^”]*”(?:, “[^”]*”)*")
_DIGITS_RE = re.compile(r"\d+")
SUMMARY_ROWS = 5
SUMMARY_REASONS = 50
OTHER_REASONS = "Other reasons"


class RowSummary:
    """Errors and warnings grouped by reason: how many rows, the first few row numbers, one example."""

    ERROR, WARNING = "error", "warning"

    def __init__(self, entries: list[dict] | None = None) -> None:
        self.entries: dict[tuple[str, str], dict] = {(e["kind"], e["reason"]): e for e in entries or []}

    @staticmethod
    def reason(message: str) -> str:
        return _DIGITS_RE.sub("N", _QUOTED_RE.sub("“…”", message.removeprefix("Warning: ")))

    def add(self, kind: str, message: str, row: int) -> None:
        key = (kind, self.reason(message))
        if key not in self.entries and len(self.entries) >= SUMMARY_REASONS:
            key = (kind, OTHER_REASONS)  # a message naming a value outside quotation marks: bounded all the same
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = {
                "kind": kind,
                "reason": key[1],
                "count": 1,
                "rows": [row],
                "example": message,
                "example_row": row,
            }
            return
        entry["count"] += 1
        if row < entry["example_row"]:
            entry["example"], entry["example_row"] = message, row
        if len(entry["rows"]) < SUMMARY_ROWS or row < entry["rows"][-1]:
            entry["rows"] = sorted(entry["rows"] + [row])[:SUMMARY_ROWS]

    def merge(self, entries: list[dict]) -> None:
        for other in entries:
            key = (other["kind"], other["reason"])
            if key not in self.entries and len(self.entries) >= SUMMARY_REASONS:
                key = (other["kind"], OTHER_REASONS)
            entry = self.entries.setdefault(key, {**other, "reason": key[1], "count": 0, "rows": []})
            entry["count"] += other["count"]
            entry["rows"] = sorted(entry["rows"] + other["rows"])[:SUMMARY_ROWS]
            if other["example_row"] < entry["example_row"]:
                entry["example"], entry["example_row"] = other["example"], other["example_row"]

    def replace_example(self, kind: str, row: int, message: str) -> None:
        entry = self.entries.get((kind, self.reason(message)))
        if entry is not None and entry["example_row"] == row:
            entry["example"] = message

    def as_json(self) -> list[dict]:
        """Errors first, then the most frequent reasons, then the earliest."""
        return sorted(
            self.entries.values(), key=lambda e: (e["kind"] != self.ERROR, -e["count"], e["rows"][0], e["reason"])
        )


# --- assembly --------------------------------------------------------------------------------------------------
_DUPLICATE_NOTE_RE = re.compile(r"Warning: the same (External ID|values) as row (\d+)\.\Z")


def link_batch_finish(*, batch_id: int) -> None:
    """Put the chunks' output together in input order: the output and errors files, the counts, the summary.

    Runs once every chunk of a running batch is done (by the worker that made the last one, or sent again by
    the sweeper), and for a cancelled batch with the chunks made before the cancel: its partial output.
    """
    batch = LinkBatch.objects.select_related("template").get(pk=batch_id)
    if batch.status == LinkBatch.Status.RUNNING:
        if batch.chunks.exclude(status=LinkChunk.Status.DONE).exists():
            return
        finished_status, suffix = LinkBatch.Status.SUCCEEDED, ""
    elif batch.status == LinkBatch.Status.CANCELLED and not batch.output_file:
        finished_status, suffix = LinkBatch.Status.CANCELLED, "-partial"
    else:
        return
    # The query for holders repeated across chunks runs on a connection of its own while the output is
    # copied (below): not inside an outer transaction, whose uncommitted rows another connection cannot see.
    query_beside = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic(), ThreadPoolExecutor(1) as beside:
        # One assembly at a time: the batch row stays locked until it is written, so an assembly sent again
        # by the sweeper while this one runs (or a cancel) waits or gives up, and never writes the same
        # files at the same time. A worker killed here releases the lock with its connection.
        mine = LinkBatch.objects.select_for_update(skip_locked=True).filter(
            pk=batch.pk, status=batch.status, output_file=""
        )
        if not mine.exists():
            return
        chunks = list(batch.chunks.filter(status=LinkChunk.Status.DONE).order_by("index"))
        repeated: Future = Future()
        if len(batch.plan) <= 1 or not chunks:
            repeated.set_result({})
        elif query_beside:
            repeated = beside.submit(_repeated_on_own_connection, batch.pk)
        else:
            repeated.set_result(_RowKeys(batch.pk).repeated())
        header = _header_bytes(batch)
        output_path = batch.sibling_path(f"output{suffix}.csv")
        assembly = _Assembly(batch, chunks, repeated)
        output_name = _store_stream(assembly.output(header), output_path)
        if assembly.copied_unchecked_repeats():  # copied before the query answered, and it needed changes
            default_storage.delete(output_name)
            assembly = _Assembly(batch, chunks, repeated)
            output_name = _store_stream(assembly.output(header), output_path)
        counts, summary = assembly.counts, assembly.summary
        errors_name = _store_stream(assembly.errors(header), batch.sibling_path(f"errors{suffix}.csv"))
        totals = {"rows_total": counts.rows_done} if finished_status == LinkBatch.Status.SUCCEEDED else {}
        finished = LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt, status=batch.status).update(
            status=finished_status,
            output_file=output_name,
            errors_file=errors_name,
            summary=summary.as_json(),
            finished_at=timezone.now(),
            **totals,
            **counts.as_fields(),
        )
    if not finished:  # cancelled, or assembled by another worker, in the meantime
        for name in (output_name, errors_name):
            default_storage.delete(name)
    elif finished_status == LinkBatch.Status.SUCCEEDED:
        _discard_chunks(batch)
    else:
        _RowKeys(batch.pk).drop()  # a cancelled batch keeps its chunks (where it stopped) until its re-run


def link_batch_write_output(*, batch: LinkBatch, path: str | os.PathLike) -> None:
    """Write the batch's result file to a local path (`manage.py generate_links`): a storage on this host's
    disk is copied by the kernel, any other is streamed."""
    try:
        stored = default_storage.path(batch.output_file.name)
    except NotImplementedError:  # not on this host's disk
        with default_storage.open(batch.output_file.name, "rb") as result, open(path, "wb") as out:
            shutil.copyfileobj(result, out, _BLOCK_BYTES)
    else:
        shutil.copyfile(stored, path)


def _header_bytes(batch: LinkBatch) -> bytes:
    # UTF-8 with a BOM whatever the input was: Excel then shows Icelandic letters, and every other reader
    # skips the BOM.
    text = io.StringIO()
    ResultWriter(text, delimiter=batch.delimiter, header=batch.header + [LINK_COLUMN, ERROR_COLUMN])
    return codecs.BOM_UTF8 + text.getvalue().encode("utf-8")


def _repeated_on_own_connection(batch_id: int) -> dict[int, tuple[int, bool]]:
    try:
        with transaction.atomic():
            return _RowKeys(batch_id).repeated()
    finally:
        connection.close()  # this thread's connection


class _Assembly:
    """The chunks' files one after the other; a chunk holding the first row of a holder who came earlier
    in another chunk is read row by row, and those rows get their "the same values as row N" right.

    Which rows those are comes from a query that may still be running when the copy starts: chunks are
    copied as they are until it answers, and copied_unchecked_repeats() then says whether one of them
    needed changes after all (a file with holders repeated across chunks): the caller copies it again."""

    def __init__(self, batch: LinkBatch, chunks: list[LinkChunk], repeated: Future) -> None:
        self.batch, self.chunks, self.later = batch, chunks, repeated
        self.repeated: dict[int, tuple[int, bool]] | None = None
        self.counts, self.summary = _Counts(), RowSummary()
        for chunk in chunks:
            self.counts.add(chunk.counts)
            self.summary.merge(chunk.summary)
        self.unchecked: list[tuple[int, int | None]] = []  # (row before, last row) of chunks copied unchecked

    def output(self, header: bytes) -> Iterator[bytes]:
        yield header
        chunks = self.chunks
        starts = [chunk.row_before for chunk in chunks[1:]] + [None]
        for chunk, end in zip(chunks, starts, strict=True):
            if self.repeated is None and self.later.done():
                self.repeated = self.later.result()
            if self.repeated is None:
                self.unchecked.append((chunk.row_before, end))
                yield from _read_stored(chunk.output_file)
            elif any(chunk.row_before < row and (end is None or row <= end) for row in self.repeated):
                yield from self._rewritten(chunk)
            else:
                yield from _read_stored(chunk.output_file)

    def copied_unchecked_repeats(self) -> bool:
        if self.repeated is None:
            self.repeated = self.later.result()
        return any(
            before < row and (end is None or row <= end) for before, end in self.unchecked for row in self.repeated
        )

    def errors(self, header: bytes) -> Iterator[bytes]:
        yield header
        for chunk in self.chunks:
            yield from _read_stored(chunk.errors_file)

    def _rewritten(self, chunk: LinkChunk) -> Iterator[bytes]:
        batch = self.batch
        dialect = _dialect(batch)
        text = io.StringIO()
        writer = csv.writer(text, delimiter=batch.delimiter, lineterminator="\r\n")
        with (
            default_storage.open(batch.input_file.name, "rb") as binary,
            default_storage.open(chunk.output_file, "rb") as stored,
        ):
            rows = read_chunk(
                binary, dialect, width=len(batch.header), start=chunk.start, end=chunk.end, row_before=chunk.row_before
            )
            # Every input row gave one output row, in order: the input says which row number each one is.
            records = csv.reader(io.TextIOWrapper(stored, encoding="utf-8", newline=""), delimiter=batch.delimiter)
            for (number, _), cells in zip(rows, records, strict=True):
                if cells[-2]:  # a link: only those rows carry duplicate notes
                    cells[-1] = self._notes(number, cells[-1])
                writer.writerow(cells)
                if text.tell() > _BLOCK_BYTES:
                    yield text.getvalue().encode("utf-8")
                    text.seek(0)
                    text.truncate()
        yield text.getvalue().encode("utf-8")

    def _notes(self, number: int, notes: str) -> str:
        existing = notes.endswith(EXISTING_MEMBER_NOTE)
        body = notes.removesuffix(EXISTING_MEMBER_NOTE).rstrip() if existing else notes
        if number in self.repeated:  # the first in its chunk, not in the file
            first, by_id = self.repeated[number]
            note = _duplicate_note(by_id, first)
            self.counts.duplicates += 1
            self.counts.warnings += not notes
            self.summary.add(RowSummary.WARNING, note, number)
        else:  # a repeat within its chunk of a row that is itself a repeat: the earliest row is named
            match = _DUPLICATE_NOTE_RE.search(body)
            if not match or int(match[2]) not in self.repeated:
                return notes
            body = body[: match.start()].rstrip()
            note = _duplicate_note(match[1] == "External ID", self.repeated[int(match[2])][0])
            self.summary.replace_example(RowSummary.WARNING, number, note)
        return " ".join(part for part in (body, note, EXISTING_MEMBER_NOTE if existing else "") if part)


def _read_stored(name: str) -> Iterator[bytes]:
    with default_storage.open(name, "rb") as stored:
        while block := stored.read(_BLOCK_BYTES):
            yield block


_BLOCK_BYTES = 1024 * 1024


class _Pieces(io.RawIOBase):
    """A readable file over an iterator of bytes: storage saves the assembled output as it is produced,
    without a temporary file and without holding it in memory."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces, self.pending = pieces, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.pending = memoryview(piece)  # a view: handing out a piece in parts copies each byte once
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _store_stream(pieces: Iterator[bytes], name: str) -> str:
    """Store the bytes under `name`, replacing what an earlier run left there."""
    if default_storage.exists(name):
        default_storage.delete(name)
    content = File(io.BufferedReader(_Pieces(pieces), _BLOCK_BYTES), name=name)
    content.DEFAULT_CHUNK_SIZE = _BLOCK_BYTES  # storage copies it in blocks of a MB rather than 64 KB
    return default_storage.save(name, content)


def _discard_chunks(batch: LinkBatch) -> None:
    """Remove what the chunks of an earlier run or of the finished batch left: their rows, keys and files,
    including a file a worker stored just before it was killed (it is in the folder, in no chunk row)."""
    folder = batch.sibling_path("chunks")
    try:
        _, names = default_storage.listdir(folder)
    except FileNotFoundError:
        names = []
    for name in names:
        default_storage.delete(f"{folder}/{name}")
    batch.chunks.all().delete()
    _RowKeys(batch.pk).drop()


# --- cancel and sweep ------------------------------------------------------------------------------------------
def link_batch_cancel(*, batch: LinkBatch, user) -> LinkBatch:
    """Stop a queued or running batch: its chunks stop at their next beat (within a second); the rows made
    until then are kept as a partial result, assembled by a worker."""
    who = user.get_username() if user is not None else "the command"
    with transaction.atomic():
        cancelled = LinkBatch.objects.filter(
            pk=batch.pk, status__in=[LinkBatch.Status.QUEUED, LinkBatch.Status.RUNNING]
        ).update(
            status=LinkBatch.Status.CANCELLED,
            finished_at=timezone.now(),
            error=f"Cancelled by {who}; the result holds the rows made until then.",
        )
        if not cancelled:
            raise LinkUploadError("Only a batch that is queued or running can be cancelled.")
        enqueue_after_commit(FINISH_TASK, batch.pk)
    batch.refresh_from_db()
    return batch


def link_batches_sweep() -> dict[str, int]:
    """Send again the work whose message was lost (background.recovery): batches queued for long (the
    broker was down when they were confirmed), chunks whose worker stopped beating (killed), chunks waiting
    while their batch shows no life, and batches whose chunks are all done but were never assembled. Each is
    sent at most once per LINKS_STALE_SECONDS; a chunk or batch already taken is left alone by the task."""
    now = timezone.now()
    stale_seconds = settings.LINKS_STALE_SECONDS
    stale = now - timedelta(seconds=stale_seconds)
    sent = {"assemblies": 0}
    sent["batches"] = resend_waiting(
        LinkBatch.objects.all(), lambda batch: _enqueue(batch.pk), stale_seconds=stale_seconds
    )
    running = LinkChunk.objects.filter(batch__status=LinkBatch.Status.RUNNING)
    sent["chunks"] = resend_waiting(
        running.filter(batch__heartbeat_at__lt=stale), _send_chunk, stale_seconds=stale_seconds
    ) + requeue_stale(running, _send_chunk, stale_seconds=stale_seconds)
    all_done = LinkBatch.objects.filter(status=LinkBatch.Status.RUNNING, heartbeat_at__lt=stale).exclude(
        chunks__status__in=[LinkChunk.Status.QUEUED, LinkChunk.Status.RUNNING]
    )
    cancelled = LinkBatch.objects.filter(status=LinkBatch.Status.CANCELLED, output_file="", finished_at__lt=stale)
    for batch_id in [*all_done.values_list("pk", flat=True), *cancelled.values_list("pk", flat=True)]:
        LinkBatch.objects.filter(pk=batch_id).update(heartbeat_at=now)
        enqueue_after_commit(FINISH_TASK, batch_id)
        sent["assemblies"] += 1
    return sent
