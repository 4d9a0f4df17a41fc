"""Bringing back recorded work whose task was lost, one mechanism for every kind of run.

Work is recorded in a row before its task is sent (templates_sync.enqueue): a task is only a nudge. Two things
lose a nudge: the broker was away when it was sent (the row stays QUEUED), or the worker running it died (the
row stays RUNNING, and its heartbeat stops). One beat entry, every SWEEP_INTERVAL, sends one task per sweep
named in settings.RECOVERY_SWEEPS; each sweep finds its app's lost work with the helpers below and sends it
again. Sweeps run as separate tasks so that a slow one (retrying pending members upstream) never holds up
the others. Apps list their sweeps in settings, not here: this app is imported by the others, never the
reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string

from .enqueue import enqueue_after_commit

logger = logging.getLogger(__name__)

SWEEP_TASK = "templates_sync.run_sweep"
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


def resend_overdue(rows: QuerySet, send: Callable[[Model], None], *, limit: int = 100) -> int:
    """Send again the task of every row of `rows` still QUEUED SWEEP_OVERDUE_AFTER seconds after it was
    recorded (`queued_at`): its first send failed or its message was lost. Work starts only from QUEUED, so a
    late original and its re-send never run it twice. Returns how many were sent."""
    cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_OVERDUE_AFTER)
    overdue = list(rows.filter(status=QUEUED, queued_at__lt=cutoff).order_by("queued_at")[:limit])
    for row in overdue:
        send(row)
    return len(overdue)


def resend_waiting(rows: QuerySet, send: Callable[[Model], None], *, stale_seconds: float, limit: int = 500) -> int:
    """Send again every QUEUED row of `rows` that has waited `stale_seconds` (since `queued_at`, and since the
    last time a sweep sent it: its `heartbeat_at`): chunks whose run shows no life, a batch whose task never
    came. Each send restarts the row's heartbeat, so a row is sent at most once per `stale_seconds`; the row
    starts only from QUEUED, so a late original and its re-send never both run it. Returns how many were sent."""
    now = timezone.now()
    stale = now - timedelta(seconds=stale_seconds)
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
    QUEUED and send its task again: its worker died. The compare-and-set on the heartbeat the sweep saw takes
    each death over once, even with two sweeps at a time, and restarts the heartbeat (the row waits a full
    period before resend_waiting sends it again); a worker that was only slow finds its row no longer its own
    at its next beat (Heartbeat) and stops. Returns how many were sent again."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.RUN_STALE_SECONDS if stale_seconds is None else stale_seconds)
    requeued = 0
    for row in list(rows.filter(status=RUNNING, heartbeat_at__lt=stale).order_by("pk")[:limit]):
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
    beat with it (a chunk's run: the run shows life while any of its chunks does)."""

    def __init__(self, mine: QuerySet, *, also: QuerySet | None = None, every: float | None = None):
        self.mine, self.also = mine, also
        self.every = settings.RUN_HEARTBEAT_SECONDS if every is None else every
        self.last = timezone.now()

    def __call__(self, *, force: bool = False) -> bool:
        now = timezone.now()
        if not force and (now - self.last).total_seconds() < self.every:
            return True
        self.last = now
        if not self.mine.update(heartbeat_at=now):
            return False
        if self.also is not None:
            self.also.update(heartbeat_at=now)
        return True


def take(row: Model, *, among: QuerySet | None = None, also: QuerySet | None = None, **fields) -> Heartbeat | None:
    """Take `row` for this worker: from QUEUED to RUNNING under the next attempt number (its `attempt` field),
    with a first heartbeat and `fields`. Returns the heartbeat of this attempt, or None when the row was not
    queued (another worker took it, it finished) or is not among `among`. `also` beats with it."""
    now = timezone.now()
    rows = type(row)._default_manager.all() if among is None else among
    if not rows.filter(pk=row.pk, status=QUEUED, attempt=row.attempt).update(
        status=RUNNING, attempt=row.attempt + 1, heartbeat_at=now, **fields
    ):
        return None
    row.status, row.attempt, row.heartbeat_at = RUNNING, row.attempt + 1, now
    if also is not None:
        also.update(heartbeat_at=now)
    return Heartbeat(type(row)._default_manager.filter(pk=row.pk, status=RUNNING, attempt=row.attempt), also=also)
