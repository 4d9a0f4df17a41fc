"""Bringing back recorded work whose task was lost, one mechanism for every kind of run.

Work is recorded in a row before its task is sent (background.enqueue): a task is only a nudge. Two things
lose a nudge: the broker was away when it was sent (the row stays QUEUED), or the worker running it died (the
row stays RUNNING, and its heartbeat stops). One beat entry, every SWEEP_INTERVAL, sends one task per sweep
named in settings.RECOVERY_SWEEPS; each sweep finds its app's lost work with the helpers below and sends it
again. Sweeps run as separate tasks so that a slow one (retrying pending members upstream) never holds up
the others. Apps list their sweeps in settings, not here: this app is imported by the others, never the
reverse.

A long run works in slices of RUN_SLICE_SECONDS, each a task that hands the row back (Heartbeat.hand_back) and
sends the next: no task reaches the Celery time limit, and only a worker that died costs an attempt. While it
works, a thread beats for it (Heartbeat.keep_beating), so only a dead process looks dead to the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Model, Q, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from .enqueue import enqueue_after_commit

logger = logging.getLogger(__name__)

SWEEP_TASK = "background.run_sweep"
QUEUED, RUNNING = "queued", "running"
# Work taken this many times gives up instead of running again: each take after the first follows a worker
# that died in it, and work that kills every worker it meets must not be handed on for ever.
MAX_ATTEMPTS = 5


def sweeps_send_all() -> int:
    """Beat's one sweep entry: send each sweep of settings.RECOVERY_SWEEPS as a task of its own."""
    for name in settings.RECOVERY_SWEEPS:
        enqueue_after_commit(SWEEP_TASK, name)
    return len(settings.RECOVERY_SWEEPS)


def sweep_run(name: str):
    """Run the sweep of settings.RECOVERY_SWEEPS named `name` (only those: a message names no other code)."""
    path = settings.RECOVERY_SWEEPS.get(name)
    if path is None:
        logger.error("No recovery sweep is named %r; nothing run", name)
        return None
    return import_string(path)()


def resend_waiting(
    rows: QuerySet, send: Callable[[Model], None], *, stale_seconds: float | None = None, limit: int = 500
) -> int:
    """Send again every QUEUED row of `rows` that has waited `stale_seconds` (SWEEP_OVERDUE_AFTER unless
    given) since it was last sent: since it was recorded (`queued_at`) and since a sweep or a worker last sent
    it (`heartbeat_at`, stamped by each send). Its first send failed, its message was lost, or (callers narrow
    `rows`) its run shows no life. A row is sent at most once per `stale_seconds`, however long it waits; it
    starts only from QUEUED, so a late original and its re-send never both run it. Returns how many were sent."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SWEEP_OVERDUE_AFTER if stale_seconds is None else stale_seconds)
    waiting = rows.filter(status=QUEUED, queued_at__lt=stale).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale)
    )
    sent = 0
    for row in list(waiting.order_by("pk")[:limit]):
        if (
            type(row)
            ._default_manager.filter(pk=row.pk, status=QUEUED, heartbeat_at=row.heartbeat_at)
            .update(heartbeat_at=now)
        ):
            send(row)
            sent += 1
    return sent


def requeue_stale(
    rows: QuerySet, send: Callable[[Model], None], *, stale_seconds: float | None = None, limit: int = 500
) -> int:
    """Set every RUNNING row of `rows` without a heartbeat for `stale_seconds` (RUN_STALE_SECONDS) back to
    QUEUED and send its task again: its worker died (a live worker beats from a thread of its own while it
    works, Heartbeat.keep_beating). A row that never beat (recorded before it had a heartbeat) is stale once it
    started, or else was queued, that long ago. The compare-and-set on the heartbeat the sweep saw takes each
    death over once, even with two sweeps at a time, and restarts the heartbeat (the row waits a full period
    before resend_waiting sends it again); a worker that was only cut off finds its row no longer its own at
    its next beat and stops. Returns how many were sent again."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUN_STALE_SECONDS if stale_seconds is None else stale_seconds)
    fields = {field.name for field in rows.model._meta.get_fields()}
    since = "started_at" if "started_at" in fields else "queued_at"
    silent = Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, **{f"{since}__lt": stale})
    requeued = 0
    for row in list(rows.filter(silent, status=RUNNING).order_by("pk")[:limit]):
        if (
            type(row)
            ._default_manager.filter(pk=row.pk, status=RUNNING, heartbeat_at=row.heartbeat_at)
            .update(status=QUEUED, heartbeat_at=now)
        ):
            logger.warning("%s %s: no heartbeat since %s; queued again", type(row).__name__, row.pk, row.heartbeat_at)
            send(row)
            requeued += 1
    return requeued


class Heartbeat:
    """A running row's sign of life, written at most every `every` seconds (RUN_HEARTBEAT_SECONDS).

    `mine` selects the row only while this worker holds it (its attempt number, status RUNNING): calling the
    heartbeat returns False once a sweep has taken the row over, and the worker stops. `also` are rows that
    beat with it (a chunk's run: the run shows life while any of its chunks does).

    Inside `keep_beating()` a thread of its own writes the beats, so the row shows life while the worker waits
    on one upstream call as long as it may take (retries, Retry-After): only a process that died stops beating.
    Calling the heartbeat then only reports whether the row is still this worker's."""

    def __init__(self, mine: QuerySet, *, also: QuerySet | None = None, every: float | None = None):
        self.mine, self.also = mine, also
        self.every = settings.RUN_HEARTBEAT_SECONDS if every is None else every
        self.last = timezone.now()
        self.lost = False
        self._stop: threading.Event | None = None

    def __call__(self, *, force: bool = False) -> bool:
        if self._stop is not None:
            return not self.lost
        now = timezone.now()
        if not force and (now - self.last).total_seconds() < self.every:
            return True
        return self._beat()

    def _beat(self) -> bool:
        now = timezone.now()
        self.last = now
        if not self.mine.update(heartbeat_at=now):
            self.lost = True
            return False
        if self.also is not None:
            self.also.update(heartbeat_at=now)
        return True

    @contextlib.contextmanager
    def keep_beating(self) -> Iterator[Heartbeat]:
        """Beat from a thread while the block runs. The thread needs a database connection of its own that
        sees the row, so it runs on PostgreSQL outside a transaction only (a worker; the page writer of the
        template sync follows the same rule); inside a caller's transaction the caller's own calls beat."""
        if connection.vendor != "postgresql" or connection.in_atomic_block:
            yield self
            return
        self._stop = threading.Event()
        thread = threading.Thread(target=self._beat_until_stopped, daemon=True, name="run-heartbeat")
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self._stop = None

    def _beat_until_stopped(self) -> None:
        try:
            while not self._stop.wait(self.every):
                try:
                    if not self._beat():
                        return  # taken over: the worker sees `lost` at its next check and stops
                except DatabaseError:
                    logger.warning("heartbeat not written: the database did not answer", exc_info=True)
                    connection.close()  # a fresh connection at the next beat
        finally:
            connection.close()  # this thread's own connection

    def hand_back(self) -> bool:
        """Put the row back in the queue for the next task to go on with, under this same attempt number:
        a worker that stops after a bounded share of the work (RUN_SLICE_SECONDS) did not die in it, and its
        next take must not count as another attempt. False when the row was no longer this worker's."""
        # The heartbeat stamped now counts as its last send: the sweep sends it again only if the worker's own
        # send is lost (resend_waiting). `queued_at` stays the time it was asked for.
        return bool(self.mine.update(status=QUEUED, attempt=F("attempt") - 1, heartbeat_at=timezone.now()))


def take(row: Model, *, among: QuerySet | None = None, also: QuerySet | None = None, **fields) -> Heartbeat | None:
    """Take `row` for this worker: from QUEUED to RUNNING under the next attempt number (its `attempt` field),
    with a first heartbeat and `fields`. Returns the heartbeat of this attempt, or None when the row was not
    queued (another worker took it, it finished) or is not among `among`. `also` beats with it."""
    now = timezone.now()
    rows = type(row)._default_manager.all() if among is None else among
    # Both writes or neither: a connection that broke between them (a database restart, a killed backend) left
    # the row running under a worker that had already given up on it, and the task sent again found it not
    # queued, so it waited for the sweep to see its heartbeat go stale.
    with transaction.atomic():
        if not rows.filter(pk=row.pk, status=QUEUED, attempt=row.attempt).update(
            status=RUNNING, attempt=row.attempt + 1, heartbeat_at=now, **fields
        ):
            return None
        if also is not None:
            also.update(heartbeat_at=now)
    row.status, row.attempt, row.heartbeat_at = RUNNING, row.attempt + 1, now
    return Heartbeat(type(row)._default_manager.filter(pk=row.pk, status=RUNNING, attempt=row.attempt), also=also)
