"""Writes for campaign CSV uploads: accept a file, confirm its mapping, turn every row into a link.

The upload page, the Celery task and `manage.py generate_links` all go through these functions, so a file
gives the same output whichever way it came in.
"""
from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import IO

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from members.selectors import external_ids_in_use
from templates_sync.enqueue import enqueue_after_commit
from templates_sync.models import PassTemplate

from . import selectors
from .csv_files import CsvDialect, CsvFormatError, ResultWriter, check_size, read_rows, sniff
from .models import LinkBatch, LinkBatchEvent
from .rows import Row, RowRules, is_empty
from .tokens import TokenTooLong

logger = logging.getLogger(__name__)

SNIFF_BYTES = 64 * 1024
LINK_COLUMN = "smartpass_link"
ERROR_COLUMN = "error"
# Rows handled between two looks at the database (duplicates, existing members) and two progress writes
# at most: big enough that the queries cost little per row, small enough that memory stays flat.
MAX_CHUNK_ROWS = 2000


class LinkUploadError(ValueError):
    """An upload or mapping that cannot be used; the message is a sentence for the person who sent it."""


class _Superseded(Exception):
    """A newer run of the same batch has started (a redelivered task): this run stops without writing."""


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
        header, rows = read_rows(
            binary, dialect, max_rows=settings.LINKS_MAX_ROWS, max_columns=settings.LINKS_MAX_COLUMNS
        )
        row_count = filled_count = 0
        for _, cells in rows:
            row_count += 1
            filled_count += not is_empty(cells)
    except CsvFormatError as exc:
        raise LinkUploadError(str(exc)) from None
    # Empty rows come back in the result with an error; a file of nothing else is refused here instead of
    # giving a result file that holds errors only.
    if filled_count == 0:
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
        rows_total=row_count,
        single_use=single_use,
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
    """Queue a failed batch again, or one whose worker died (still "running" long after any time limit)."""
    if not link_batch_can_rerun(batch=batch):
        raise LinkUploadError("Only a failed batch can be run again.")
    with transaction.atomic():
        LinkBatch.objects.filter(pk=batch.pk).update(status=LinkBatch.Status.QUEUED, queued_at=timezone.now(), error="")
        _enqueue(batch.pk)
    batch.refresh_from_db()
    return batch


def link_batch_can_rerun(*, batch: LinkBatch) -> bool:
    if batch.status == LinkBatch.Status.FAILED:
        return True
    if batch.status in (LinkBatch.Status.RUNNING, LinkBatch.Status.QUEUED):
        since = batch.started_at or batch.queued_at or batch.created_at
        limit = timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 1900) + 60)
        return since is not None and timezone.now() - since > limit
    return False


def _enqueue(batch_id: int) -> None:
    enqueue_after_commit("links.process_link_batch", batch_id)


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
        detail = {"old_mapping": batch.mapping, "new_mapping": mapping, "old_strict": batch.strict, "new_strict": strict}
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
@dataclass
class _Counts:
    rows_done: int = 0
    rows: int = 0
    links: int = 0
    errors: int = 0
    warnings: int = 0
    duplicates: int = 0
    existing_members: int = 0

    def as_fields(self) -> dict[str, int]:
        return dict(self.__dict__)


ProgressCallback = Callable[[int, int], None]


def link_batch_process(*, batch_id: int, on_progress: ProgressCallback | None = None) -> LinkBatch:
    """Make the links of a queued batch: read the input row by row, write the output and error files.

    Safe to run again (a redelivered task, a re-run after a crash): every run starts from the first row
    and replaces both files only once it has written them completely. A finished batch is left alone.
    """
    batch = LinkBatch.objects.select_related("template").get(pk=batch_id)
    if batch.status in (LinkBatch.Status.UPLOADED, LinkBatch.Status.SUCCEEDED):
        return batch
    attempt = batch.attempt + 1
    started = LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt).update(
        attempt=attempt, status=LinkBatch.Status.RUNNING, started_at=timezone.now(), finished_at=None, error="",
        **_Counts().as_fields(),
    )  # fmt: skip
    if not started:
        return LinkBatch.objects.get(pk=batch.pk)  # another run took it over in between
    batch.attempt = attempt
    try:
        _generate(batch=batch, on_progress=on_progress)
    except _Superseded:
        logger.info("Link batch %s: a newer run took over; attempt %s stops.", batch.pk, attempt)
    except CsvFormatError as exc:
        _fail(batch=batch, message=str(exc))
    except SoftTimeLimitExceeded:
        reference = uuid.uuid4().hex[:8]
        logger.exception("Link batch %s stopped by the time limit (reference %s)", batch.pk, reference)
        _fail(batch=batch, message=f"Making the links took too long and was stopped (reference {reference}). Run it again.")
    except Exception:
        reference = uuid.uuid4().hex[:8]
        logger.exception("Link batch %s failed (reference %s)", batch.pk, reference)
        _fail(batch=batch, message=f"Something went wrong while making the links (reference {reference}). "
                                   "Run it again or contact support.")  # fmt: skip
    return LinkBatch.objects.select_related("template").get(pk=batch.pk)


def _fail(*, batch: LinkBatch, message: str) -> None:
    LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt).update(
        status=LinkBatch.Status.FAILED, error=message, finished_at=timezone.now()
    )


class _SeenRows:
    """Which rows came before, kept in a temporary table of the database connection.

    A Python set of a million keys would grow the worker by ~100 MB; the table keeps memory flat, and one
    query per chunk costs little next to validating the chunk.
    """

    TABLE = "links_seen_rows"

    def __enter__(self) -> _SeenRows:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
            cursor.execute(f"CREATE TEMPORARY TABLE {self.TABLE} (digest VARCHAR(32) PRIMARY KEY, first_row INTEGER NOT NULL)")
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {self.TABLE}")
        except Exception:  # the connection may be what failed; the table goes with it
            logger.debug("Could not drop %s", self.TABLE, exc_info=True)

    def first_rows(self, rows: list[Row]) -> dict[str, int]:
        """digest → the earliest row with it, for rows of this chunk that repeat an earlier one; records the rest."""
        chunk_first: dict[str, int] = {}
        for row in rows:
            chunk_first.setdefault(row.digest, row.number)
        earlier: dict[str, int] = {}
        digests = list(chunk_first)
        if digests:
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # Two array parameters instead of thousands of placeholders: psycopg spends more time
                    # splitting a query with 4,000 "%s" than PostgreSQL spends running it.
                    cursor.execute(f"SELECT digest, first_row FROM {self.TABLE} WHERE digest = ANY(%s)", [digests])
                    earlier = dict(cursor.fetchall())
                    new = [(digest, number) for digest, number in chunk_first.items() if digest not in earlier]
                    cursor.execute(
                        f"INSERT INTO {self.TABLE} (digest, first_row) SELECT * FROM unnest(%s::varchar[], %s::int[])",
                        [[digest for digest, _ in new], [number for _, number in new]],
                    )
                else:
                    marks = ",".join(["%s"] * len(digests))
                    cursor.execute(f"SELECT digest, first_row FROM {self.TABLE} WHERE digest IN ({marks})", digests)
                    earlier = dict(cursor.fetchall())
                    new = [(digest, number) for digest, number in chunk_first.items() if digest not in earlier]
                    if new:
                        marks = ",".join(["(%s,%s)"] * len(new))
                        cursor.execute(f"INSERT INTO {self.TABLE} (digest, first_row) VALUES {marks}",
                                       [value for pair in new for value in pair])  # fmt: skip
        return {**chunk_first, **earlier}


def _generate(*, batch: LinkBatch, on_progress: ProgressCallback | None) -> None:
    rules = RowRules(batch)
    dialect = CsvDialect(encoding=batch.encoding, delimiter=batch.delimiter, has_bom=batch.encoding == "utf-8-sig")
    total = batch.rows_total
    chunk_rows = max(50, min(MAX_CHUNK_ROWS, total // 100 or 1))
    progress_step = max(1, total // 100)  # about every 1% of the rows
    counts = _Counts()
    next_progress = progress_step
    output = _temporary_csv()
    errors_output = _temporary_csv()
    try:
        with default_storage.open(batch.input_file.name, "rb") as binary, _SeenRows() as seen:
            header, records = read_rows(binary, dialect, max_rows=settings.LINKS_MAX_ROWS)
            out_header = header + [LINK_COLUMN, ERROR_COLUMN]
            writer = ResultWriter(output, delimiter=dialect.delimiter, header=out_header)
            error_writer = ResultWriter(errors_output, delimiter=dialect.delimiter, header=out_header)
            chunk: list[Row] = []
            for number, cells in records:
                chunk.append(rules.check(number, cells))
                if len(chunk) >= chunk_rows:
                    _write_chunk(chunk, rules=rules, seen=seen, writer=writer, error_writer=error_writer, counts=counts)
                    chunk = []
                    if counts.rows_done >= next_progress:
                        _save_progress(batch, counts)
                        next_progress = counts.rows_done + progress_step
                    if on_progress:
                        on_progress(counts.rows_done, total)
            if chunk:
                _write_chunk(chunk, rules=rules, seen=seen, writer=writer, error_writer=error_writer, counts=counts)
        if on_progress:
            on_progress(counts.rows_done, total)
        _save_progress(batch, counts)  # also the last look: was this run superseded while writing?
        output.close()
        errors_output.close()
        output_name = _store(output.name, batch.sibling_path("output.csv"))
        errors_name = _store(errors_output.name, batch.sibling_path("errors.csv"))
        finished = LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt).update(
            status=LinkBatch.Status.SUCCEEDED, output_file=output_name, errors_file=errors_name,
            finished_at=timezone.now(), rows_total=counts.rows_done, **counts.as_fields(),
        )  # fmt: skip
        if not finished:
            raise _Superseded()
    finally:
        for temporary in (output, errors_output):
            temporary.close()
            try:
                os.unlink(temporary.name)
            except FileNotFoundError:
                pass


def _write_chunk(chunk: list[Row], *, rules: RowRules, seen: _SeenRows, writer: ResultWriter,
                 error_writer: ResultWriter, counts: _Counts) -> None:  # fmt: skip
    good = [row for row in chunk if not row.error]
    first_rows = seen.first_rows(good)
    in_use = external_ids_in_use(template=rules.template, external_ids=[r.external_id for r in good if r.external_id])
    for row in chunk:
        link = ""
        if not row.error:
            try:
                link = rules.link(row)
            except TokenTooLong as exc:
                row.error = str(exc)
        if not row.error:
            first = first_rows[row.digest]
            if first != row.number:
                counts.duplicates += 1
                what = "External ID" if row.external_id else "values"
                row.notes.append(f"Warning: the same {what} as row {first}.")
            if row.external_id in in_use:
                counts.existing_members += 1
                row.notes.append("Warning: a member with this External ID already exists; the link shows that pass.")
        counts.rows_done += 1
        counts.rows += 1
        if row.error:
            counts.errors += 1
            cells = row.cells + ["", row.error]
            writer.write_row(cells)
            error_writer.write_row(cells)
        else:
            counts.links += 1
            if row.notes:
                counts.warnings += 1
            writer.write_row(row.cells + [link, " ".join(row.notes)])


def _save_progress(batch: LinkBatch, counts: _Counts) -> None:
    if not LinkBatch.objects.filter(pk=batch.pk, attempt=batch.attempt).update(**counts.as_fields()):
        raise _Superseded()


def _temporary_csv() -> IO[str]:
    # UTF-8 with a BOM whatever the input was: Excel then shows Icelandic letters, and every other reader
    # skips the BOM. newline="": the csv writer writes its own CRLF.
    return tempfile.NamedTemporaryFile("w", encoding="utf-8-sig", newline="", suffix=".csv", delete=False)


def _store(local_path: str, name: str) -> str:
    """Put a finished local file into storage under `name`, replacing what an earlier run left there."""
    if default_storage.exists(name):
        default_storage.delete(name)
    with open(local_path, "rb") as source:
        return default_storage.save(name, File(source))
