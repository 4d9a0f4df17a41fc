"""Writes for campaign CSV uploads: accept a file, confirm its mapping, turn every row into a link.

The upload page, the Celery task and `manage.py generate_links` all go through these functions, so a file
gives the same output whichever way it came in. One module per stage, re-exported here so that callers keep
writing `from links import services; services.link_batch_create(...)`:

- upload: accept a file, confirm its mapping, re-run, new columns, delete, downloads recorded;
- processing: a queued batch cut into chunks and run (Celery workers or local processes), failures;
- chunk: making one chunk (rows checked and linked, output stored, holders' first rows kept);
- summary: errors and warnings grouped by reason;
- assembly: the chunks put together in input order;
- sweep: cancel, and the recovery sweep for link work whose message was lost;
- short_links: short links made with a chunk's rows, stored in one COPY, looked up for /s/{code};
- opens: the first open of each row's claim page (the batch funnel);
- sending: a finished batch's links sent by email and SMS through the outbox (imported as
  `links.services.sending`, not re-exported: it needs the delivery app).
"""

from .assembly import link_batch_finish, link_batch_write_output
from .chunk import ERROR_COLUMN, EXISTING_MEMBER_NOTE, LINK_COLUMN
from .processing import (
    BATCH_TASK,
    CHUNK_TASK,
    FINISH_TASK,
    GAVE_UP,
    MISSING_INPUT,
    TOO_LONG,
    ProgressCallback,
    link_batch_finish_or_resend,
    link_batch_process,
    link_chunk_process,
)
from .summary import OTHER_REASONS, SUMMARY_REASONS, SUMMARY_ROWS, RowSummary
from .sweep import link_batch_cancel, link_batches_sweep
from .upload import (
    STORAGE_FULL_UPLOAD,
    LinkUploadError,
    link_batch_can_rerun,
    link_batch_confirm,
    link_batch_create,
    link_batch_delete,
    link_batch_download_record,
    link_batch_reencode,
    link_batch_remap,
    link_batch_rerun,
)

__all__ = [
    "BATCH_TASK",
    "CHUNK_TASK",
    "ERROR_COLUMN",
    "EXISTING_MEMBER_NOTE",
    "FINISH_TASK",
    "LINK_COLUMN",
    "MISSING_INPUT",
    "OTHER_REASONS",
    "SUMMARY_REASONS",
    "STORAGE_FULL_UPLOAD",
    "SUMMARY_ROWS",
    "TOO_LONG",
    "GAVE_UP",
    "LinkUploadError",
    "ProgressCallback",
    "RowSummary",
    "link_batch_can_rerun",
    "link_batch_cancel",
    "link_batch_confirm",
    "link_batch_create",
    "link_batch_delete",
    "link_batch_download_record",
    "link_batch_finish",
    "link_batch_finish_or_resend",
    "link_batch_process",
    "link_batch_reencode",
    "link_batch_remap",
    "link_batch_rerun",
    "link_batch_write_output",
    "link_batches_sweep",
    "link_chunk_process",
]
