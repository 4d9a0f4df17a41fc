"""The template sync service: mirror SmartPages pass templates into PassTemplate rows.

A full run pages through the API by what the server answers, upserts each page in one short
transaction, writes nothing for unchanged templates, and marks templates removed only after a run that
read every page cleanly — and only those that SmartPages confirms are gone (404). A failed run removes
nothing. One full run at a time: the RUNNING SyncRun row is the lock (see SyncRun).

One module per concern, re-exported here (callers write `from templates_sync import sync`):

- rows: a template's row made from its API object (cleaned, fingerprinted);
- writing: prepared pages written to the mirror (COPY / JSON upsert / ORM), the PageWriter thread;
- runs: SyncRun records, taken and queued again through background.recovery, the one-full-run lock;
- running: a full sync or one template's refresh, run to its recorded outcome.
"""

from .rows import InvalidTemplate, content_hash
from .running import PROGRESS_EVERY_SECONDS, PagePrefetcher, template_refresh, templates_sync_all
from .runs import (
    RunTakenOver,
    sync_retry_delay,
    sync_run_queue,
    sync_run_retry_later,
    sync_run_send,
    sync_run_skip,
    sync_run_take,
    sync_runs_requeue_stale,
)
from .writing import PAGES_PER_WRITE, WRITER_SWITCH_INTERVAL, PageWriter, PreparedPage

__all__ = [
    "PAGES_PER_WRITE",
    "PROGRESS_EVERY_SECONDS",
    "WRITER_SWITCH_INTERVAL",
    "InvalidTemplate",
    "PagePrefetcher",
    "PageWriter",
    "PreparedPage",
    "RunTakenOver",
    "content_hash",
    "sync_retry_delay",
    "sync_run_queue",
    "sync_run_retry_later",
    "sync_run_skip",
    "sync_run_send",
    "sync_run_take",
    "sync_runs_requeue_stale",
    "template_refresh",
    "templates_sync_all",
]
