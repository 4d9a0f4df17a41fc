"""Accepting an upload, confirming its mapping, and managing uploads (re-run, new columns, delete, downloads)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.failures import is_storage_full
from templates_sync.models import PassTemplate

from .. import selectors
from ..csv_files import (
    CsvFormatError,
    check_size,
    encoding_name,
    is_utf16,
    read_rows,
    sniff,
    utf16_to_utf8,
    without_end_of_file_mark,
)
from ..models import LinkBatch, LinkBatchEvent
from .chunk import _count_rows
from .processing import BATCH_TASK
from .storage import remove_quietly, store

logger = logging.getLogger(__name__)

SNIFF_BYTES = 64 * 1024


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
    short_links: bool = False,
    encoding: str | None = None,
    output_format: str = LinkBatch.OutputFormat.PORTAL,
) -> LinkBatch:
    """Check an uploaded CSV from end to end and store it as a batch waiting for its column mapping.

    `single_use`: one pass per row (the first claim of a row's link issues, every later one shows that pass).
    `short_links`: links of the form {PUBLIC_BASE_URL}/s/{code} (short enough for one SMS).
    `encoding` (a key of csv_files.ENCODINGS) overrides detection; a UTF-16 file is stored as UTF-8, and a
    Ctrl-Z at its very end is dropped. `output_format`: LinkBatch.OutputFormat (PassKit's or the portal's).

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
        source_encoding = ""
        if is_utf16(binary.read(2), encoding or None):
            binary, source_encoding, encoding = utf16_to_utf8(binary), "utf-16", "utf-8"
        binary.seek(0, os.SEEK_END)
        binary = without_end_of_file_mark(binary, binary.tell())
        header, dialect, counted = _read_whole(binary, delimiter=delimiter or None, encoding=encoding or None)
    except CsvFormatError as exc:
        raise LinkUploadError(str(exc)) from None
    # Empty rows come back in the result with an error; a file of nothing else is refused (_read_whole)
    # instead of giving a result file that holds errors only.
    batch = LinkBatch(
        template=template,
        uploaded_by=uploaded_by,
        created_via=via,
        original_name=name,
        size_bytes=file.size,
        encoding=dialect.encoding,
        source_encoding=source_encoding,
        delimiter=dialect.delimiter,
        header=header,
        mapping=selectors.link_columns_auto_match(template=template, header=header),
        rows_total=counted.rows,
        single_use=single_use,
        short_links=short_links,
        output_format=output_format,
        plan=counted.starts,
    )
    try:
        # The input goes to the media storage under the batch's own folder; a write that fails part of the way
        # (a full disk) leaves no partial file there.
        batch.input_file.name = store(batch.input_file.field.generate_filename(batch, "input.csv"), File(binary))
    except OSError as exc:
        if is_storage_full(exc):
            logger.error("Upload of %s refused: the media storage is full (%s)", name, exc)
            raise LinkUploadError(STORAGE_FULL_UPLOAD) from None
        raise
    try:
        batch.save()
    except BaseException:
        remove_quietly(batch.input_file.name)
        raise
    return batch


def _read_whole(binary, *, delimiter: str | None, encoding: str | None):
    """(header, dialect, RowCount) of a whole file, every file-level problem raised as CsvFormatError."""
    binary.seek(0)
    dialect = sniff(binary.read(SNIFF_BYTES), delimiter=delimiter, encoding=encoding)
    binary.seek(0)
    header, rows = read_rows(binary, dialect, max_columns=settings.LINKS_MAX_COLUMNS)
    # Where each chunk of the file will start, found in this same reading: workers then seek there.
    counted = _count_rows(binary, dialect, start=rows.offset, width=len(header))
    if not counted.filled:
        raise CsvFormatError("The file has column names but no rows; add one row per pass holder.")
    binary.seek(0)
    return header, dialect, counted


def link_batch_reencode(*, batch: LinkBatch, encoding: str) -> LinkBatch:
    """Read an upload waiting for its mapping in another encoding (staff saw the letters come out wrong):
    the whole file is checked again, its header and automatic mapping read anew."""
    if batch.status != LinkBatch.Status.UPLOADED:
        raise LinkUploadError("The encoding can only be changed before the links are made.")
    if batch.source_encoding == "utf-16" or encoding == "utf-16":
        raise LinkUploadError("A UTF-16 file is converted when it is uploaded; upload it again to choose otherwise.")
    try:
        with default_storage.open(batch.input_file.name, "rb") as binary:
            header, dialect, counted = _read_whole(binary, delimiter=batch.delimiter, encoding=encoding)
    except CsvFormatError as exc:
        raise LinkUploadError(f"Read as {encoding_name(encoding)}: {exc}") from None
    mapping = selectors.link_columns_auto_match(template=batch.template, header=header)
    updated = LinkBatch.objects.filter(pk=batch.pk, status=LinkBatch.Status.UPLOADED).update(
        encoding=dialect.encoding, header=header, mapping=mapping, rows_total=counted.rows, plan=counted.starts
    )
    if not updated:
        raise LinkUploadError("The encoding can only be changed before the links are made.")
    batch.refresh_from_db()
    return batch


STORAGE_FULL_UPLOAD = (
    "The file could not be stored: the portal's media storage is full. Ask whoever runs the portal to free "
    "space there, then upload it again."
)


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
        "short_links": batch.short_links,
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
