"""Running a full sync (pages fetched a page ahead, written by a PageWriter, removals confirmed) or the
refresh of one template, and recording how the run ended."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from background.failures import failure_message
from background.heap import existing_objects_out_of_gc
from background.recovery import Heartbeat

from ..client import NotFound, SmartPagesClient, SmartPagesError, TemplatePage, smartpages_client
from ..models import PassTemplate, SyncRun
from .rows import _INT_MAX, InvalidTemplate, _canonical_id, _text
from .runs import RunTakenOver, sync_retries_drop_waiting, sync_run_queue, sync_run_retry_later, sync_run_take
from .writing import SQLITE_ROWS_PER_WRITE, PageWriter, PreparedPage, _mirror_state, _prepare, _store

logger = logging.getLogger(__name__)


class PagePrefetcher:
    """The template pages in order, each fetched and made ready (`ready(page)`) by a thread that stays a page
    ahead of the consumer.

    The network, the upstream's work and the comparing overlap with the database writes of the pages before;
    the consumer only hands ready pages on, and beats while it waits. (Fetching in one thread and comparing
    in another cost more: the two took turns with the GIL for nothing, bench/sync.py.) Pages are followed by
    what the server says (its totalPages), and an empty page ends the list whatever it claims. A fetch error is
    raised to the consumer, in page order. While it waits for a slow page, the consumer's `idle` is called
    every `idle_seconds` (the run's heartbeat). Use it as a context manager so the thread always ends.
    """

    def __init__(
        self, client: SmartPagesClient, *, page_size: int, ready, idle=None, idle_seconds: float = 5.0, ahead: int = 2
    ):
        self._pages: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._idle, self._idle_seconds = idle, idle_seconds
        self._thread = threading.Thread(
            target=self._fetch, args=(client, page_size, ready), daemon=True, name="template-page-fetcher"
        )
        self._thread.start()

    def _fetch(self, client: SmartPagesClient, page_size: int, ready) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                page = client.list_templates(page=number, page_size=page_size)
                self._pages.put(ready(page))
                number += 1
                if number >= page.total_pages or not page.data:
                    break
            self._pages.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._pages.put(exc)

    def _next(self):
        while True:
            try:
                return self._pages.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._idle is not None:
                    self._idle()

    def __iter__(self) -> Iterator:
        while (page := self._next()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page

    def __enter__(self) -> PagePrefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a fetcher waiting on a full queue
            try:
                self._pages.get(timeout=0.05)
            except queue.Empty:
                pass


PROGRESS_EVERY_SECONDS = 0.5
_PROGRESS_FIELDS = [
    "created_count",
    "updated_count",
    "unchanged",
    "removed",
    "pages",
    "total_pages",
    "total_items",
    "warning",
]


class _Progress:
    """A running run's counts (as its PageWriter wrote them), saved with its heartbeat: at most every
    PROGRESS_EVERY_SECONDS while pages arrive, and every RUN_HEARTBEAT_SECONDS whatever happens,
    from the thread doing the work — so a live worker beats even while a page is slow to come or to be
    written, and a dead one stops at once."""

    def __init__(self, run: SyncRun, heartbeat: Heartbeat):
        self.run, self.mine = run, heartbeat.mine  # the run while it is this worker's (this attempt's)
        self.writer: PageWriter | None = None
        self._saved = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._saved >= PROGRESS_EVERY_SECONDS:  # for the progress bar
            self.beat()

    def count(self) -> None:
        """Take the counts and the skipped templates' reasons from the writer."""
        run, writer = self.run, self.writer
        if writer is None:
            return
        run.created_count, run.updated_count, run.unchanged = writer.created, writer.updated, writer.unchanged
        run.warning = _skipped_warning(writer.skipped) if writer.skipped else ""

    def beat(self) -> None:
        """Save the counts and the heartbeat; raise RunTakenOver when the run is no longer this worker's."""
        run = self.run
        self.count()
        values = {name: getattr(run, name) for name in _PROGRESS_FIELDS}
        values["total_pages"], values["total_items"] = _column_count(run.total_pages), _column_count(run.total_items)
        if not self.mine.update(heartbeat_at=timezone.now(), **values):
            raise RunTakenOver(f"Run {run.pk} was taken over by another worker.")
        self._saved = time.monotonic()


def _column_count(value: int | None) -> int | None:
    # A count upstream announced (totalItems 10**11 …) is shown held at what the column can store.
    return None if value is None else max(0, min(_INT_MAX, value))


_SKIPPED_SHOWN = 5


def _skipped_warning(reasons: list[str]) -> str:
    shown = "; ".join(reasons[:_SKIPPED_SHOWN]) + (
        f"; and {len(reasons) - _SKIPPED_SHOWN} more" if len(reasons) > _SKIPPED_SHOWN else ""
    )
    return f"{len(reasons)} template(s) SmartPages sent could not be stored and were skipped: {shown}"


def templates_sync_all(
    *,
    run: SyncRun | None = None,
    trigger: str = SyncRun.Trigger.COMMAND,
    triggered_by=None,
    client: SmartPagesClient | None = None,
) -> SyncRun:
    """Run a full sync (or record it as skipped when one is running). Returns the finished SyncRun."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by)
    heartbeat = sync_run_take(run)
    if heartbeat is None:
        logger.info("template sync %s not started (%s): another worker has it, or the lock", run.pk, run.status)
        run.refresh_from_db()
        return run
    return _run_to_outcome(
        run, heartbeat, lambda smartpages: _sync_every_page(run, heartbeat, client=smartpages), client=client
    )


def _sync_every_page(run: SyncRun, heartbeat_row: Heartbeat, *, client: SmartPagesClient) -> None:
    seen: set[str] = set()  # canonical ids read: what _mark_removed compares the mirror with
    listed: set[str] = set()  # ids as listed: whether every announced item was read
    first_total, clean = None, True  # clean: every page announced the same total
    progress = _Progress(run, heartbeat_row)
    heartbeat = {"idle": progress.beat, "idle_seconds": settings.RUN_HEARTBEAT_SECONDS}
    known = _mirror_state()

    def ready(page: TemplatePage) -> tuple[PreparedPage, datetime]:
        """Compare a page with the mirror (in the fetching thread)."""
        nonlocal first_total, clean
        if first_total is None:
            first_total = page.total_items
        elif page.total_items != first_total:
            clean = False
        fresh = []  # a template listed twice (on a shifted page, or spelled in upper case) is read once
        for item in page.data:
            if isinstance(item, dict) and "id" in item:
                listed.add(str(item["id"]))
            template_id = _canonical_id(item)
            if template_id is None or template_id not in seen:
                fresh.append(item)
            if template_id is not None:
                seen.add(template_id)
        run.pages += 1
        run.total_pages, run.total_items = page.total_pages, page.total_items
        now = timezone.now()
        prepared = _prepare(fresh, known=known, now=now)
        writer.make_ready(prepared, now=now)
        return prepared, now

    gone: list[str] = []
    try:
        with existing_objects_out_of_gc(), PageWriter(**heartbeat) as writer:
            progress.writer = writer
            with PagePrefetcher(
                client, page_size=settings.SMARTPAGES_PAGE_SIZE, ready=ready, ahead=_pages_ahead(), **heartbeat
            ) as pages:
                for prepared, now in pages:
                    writer.put(prepared, now=now)
                    progress.tick()
            if clean and len(listed) == first_total:
                gone = _confirmed_gone(progress, client=client, known=known, seen=seen)
        # Every page is written: only now, and only while the run is still this worker's, is anything removed.
        if gone:
            _mark_removed(progress, gone)
    finally:
        progress.count()  # what was written, also when the run failed part of the way
    if not clean or len(listed) != first_total:
        changed = (
            f"Upstream changed during the run ({len(listed)} templates read, {first_total} announced): "
            "no template was marked removed; the next run will settle it."
        )
        run.warning = "\n".join(filter(None, [run.warning, changed]))


def _pages_ahead() -> int:
    """Pages the fetcher may read ahead of the writing. PostgreSQL's writer is a thread of its own: two. SQLite's
    pages are written inline, a few thousand templates at a time (writing.SQLITE_ROWS_PER_WRITE): the fetcher
    goes on meanwhile (sqlite3 lets go of the GIL while it writes) with room for as many pages as one write."""
    if connection.vendor == "sqlite":
        return max(2, SQLITE_ROWS_PER_WRITE // max(1, settings.SMARTPAGES_PAGE_SIZE) + 1)
    return 2


def _run_to_outcome(run: SyncRun, heartbeat: Heartbeat, work, *, client: SmartPagesClient | None) -> SyncRun:
    """Do `work(client)` for a SyncRun this worker took (`heartbeat`, from sync_run_take) and record how it
    ended; only known errors are shown."""
    # Its heartbeat comes from a thread of its own (background.recovery), whatever the work waits on: a page
    # that is slow to come or to be written, a confirmation call with its retries. Only a dead worker goes silent.
    unreachable = False
    try:
        with heartbeat.keep_beating(), smartpages_client(client) as smartpages:
            work(smartpages)
        run.status = SyncRun.Status.SUCCEEDED
    except RunTakenOver:
        logger.warning("template sync run %s stopped: another worker took it over", run.pk)
        run.refresh_from_db()
        return run
    except (SmartPagesError, InvalidTemplate) as exc:
        run.status, run.error = SyncRun.Status.FAILED, str(exc)
        logger.warning("template sync run %s failed: %s", run.pk, exc)
        unreachable = getattr(exc, "transient", False)
    except Exception as exc:  # noqa: BLE001 - a lost database connection, or a bug: a sentence for staff, logged
        run.status = SyncRun.Status.FAILED
        run.error = failure_message(
            exc, what="during the template sync", subject=f"Template sync run {run.pk}", logger=logger
        )
    run.finished_at = timezone.now()
    _record_outcome(run, heartbeat.mine)
    if run.kind == SyncRun.Kind.FULL and run.status == SyncRun.Status.SUCCEEDED:
        sync_retries_drop_waiting(succeeded=run)
    elif run.kind == SyncRun.Kind.FULL and unreachable:
        sync_run_retry_later(failed=run)
    return run


def _record_outcome(run: SyncRun, running) -> None:
    """Write a finished run's status, which also releases the lock — and cannot fail for the data.

    The values are made to fit their columns; if the write fails anyway (a broken connection, say), a
    failed status alone is written on a fresh connection. Should even that fail, the run stops beating
    and is taken over as stale (RUN_STALE_SECONDS).
    """
    values = {name: getattr(run, name) for name in _PROGRESS_FIELDS}
    values.update(
        total_pages=_column_count(run.total_pages),
        total_items=_column_count(run.total_items),
        status=run.status,
        error=_text(run.error),
        warning=_text(run.warning),
        finished_at=run.finished_at,
        heartbeat_at=run.finished_at,
    )
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()  # a connection the failure broke is replaced, not written on
    try:
        with transaction.atomic():
            running.update(**values)
        return
    except Exception:
        logger.exception("template sync run %s: recording its outcome failed; recording it as failed", run.pk)
    run.status = SyncRun.Status.FAILED
    run.error = _text(run.error) or "The outcome could not be recorded; see the worker log."
    try:
        if not connection.in_atomic_block:
            connection.close()  # the next query opens a fresh connection
        running.update(status=run.status, error=run.error, finished_at=run.finished_at)
    except Exception:
        logger.exception("template sync run %s: could not record a failure either; it will be taken over", run.pk)


def _confirmed_gone(progress: _Progress, *, client: SmartPagesClient, known: dict, seen: set[str]) -> list[str]:
    """The templates a clean run did not read that SmartPages confirms are gone (404); one it still has is
    written again.

    The list can shift under a run (an item deleted on an earlier page pushes a later item back onto
    a page already read), so absence from the pages alone is not proof. One call may take minutes (retries,
    Retry-After): the run's heartbeat thread (_run_to_outcome) beats meanwhile, so the sweep leaves it be.
    """
    missing = [template_id for template_id, (_, removed) in known.items() if not removed and template_id not in seen]
    if not missing:
        return []
    gone = []
    for template_id in missing:
        progress.beat()
        try:
            item = client.get_template(template_id)
        except NotFound:
            gone.append(template_id)
            continue
        now = timezone.now()
        progress.writer.put(_prepare([item], known=known, now=now), now=now)
    return gone


def _mark_removed(progress: _Progress, gone: list[str]) -> None:
    """Mark `gone` removed, in one transaction with the run's heartbeat: a run taken over meanwhile raises
    RunTakenOver and removes nothing, and a sweep cannot take the run over until the marks are committed (its
    row stays locked, and its heartbeat is then new)."""
    with transaction.atomic():
        progress.beat()
        progress.run.removed += PassTemplate.objects.filter(pk__in=gone, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )


def template_refresh(
    *,
    template_id: str,
    triggered_by=None,
    trigger: str = SyncRun.Trigger.MANUAL,
    run: SyncRun | None = None,
    client: SmartPagesClient | None = None,
) -> SyncRun:
    """Refresh one template from GET /api/v1/pass-template/{id}; a 404 marks it removed."""
    run = run or sync_run_queue(
        trigger=trigger, triggered_by=triggered_by, kind=SyncRun.Kind.SINGLE, template_id=template_id
    )
    heartbeat = sync_run_take(run)
    if heartbeat is None:
        run.refresh_from_db()
        return run  # delivered again after it ran, or another worker has it: nothing to do
    return _run_to_outcome(
        run, heartbeat, lambda smartpages: _refresh_one(run, str(template_id), client=smartpages), client=client
    )


def _refresh_one(run: SyncRun, template_id: str, *, client: SmartPagesClient) -> None:
    run.pages = 1
    try:
        item = client.get_template(template_id)
    except NotFound:
        run.removed = PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )
        run.warning = "SmartPages no longer has this template."
        return
    if not isinstance(item, dict) or str(item.get("id")) != template_id:
        raise InvalidTemplate("SmartPages answered with a different template than the one asked for.")
    page = _store([item], known=_mirror_state([template_id]), now=timezone.now())
    if page.skipped:
        raise InvalidTemplate(page.skipped[0])
    run.created_count, run.updated_count, run.unchanged = page.created, page.updated, page.unchanged
