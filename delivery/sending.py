"""The worker's side of the outbox: take queued messages one at a time and hand each to its provider, at
EMAIL_RATE / SMS_RATE across every worker; and the recovery sweep.

At most once, how: a message is taken by one UPDATE (queued → sending, under `SELECT … FOR UPDATE SKIP
LOCKED`, so two workers never take the same row) that commits before the provider is called. Only a worker
that dies between that commit and the next (the provider call, a few seconds at most) leaves a row in
`sending`; its run's heartbeat stops, and the sweep puts that one row back in the queue. A run sends one
message at a time, so a dead worker process costs at most one message that may arrive twice (the provider
may have taken it before the process died). Neither SMTP nor Twilio's Messages API has a request idempotency
key that would make that zero; the email keeps its Message-ID, so a mail client shows the repeat as a copy.

Retries: a transient failure (SMTP 4xx, a timeout, a dropped connection, HTTP 429 or 5xx) puts the row back with
`not_before` (Retry-After when the provider gave one, else a doubling backoff from DELIVERY_RETRY_SECONDS);
the run waits for rows due within a few seconds, and the sweep nudges a sender for rows due later. Never a
Celery countdown (background.enqueue). After MAX_ATTEMPTS the message fails with the last reason.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from background.rate_limit import SharedRateLimiter
from background.recovery import MAX_ATTEMPTS, Heartbeat

from . import services
from .models import EMAIL, SMS, Message, SendingRun
from .transports import DeliveryFailure, transport_for

logger = logging.getLogger(__name__)

# A run waits in place for a retry due this soon, rather than ending and leaving it to the sweep.
WAIT_IN_PLACE_SECONDS = 3.0
# The longest a run pauses all sending after a 429 (the rest of a Retry-After is kept in the row).
PAUSE_AFTER_429_MAX = 10.0
WORKER_DIED = "A worker stopped while sending it; sent again (the holder may get it twice)."
WORKER_DIED_TOO_OFTEN = "Workers stopped while sending it {n} times; not sent again."

_limiters: dict[str, SharedRateLimiter] = {}


def limiter_for(channel: str) -> SharedRateLimiter:
    """The rate shared by every worker for `channel` (EMAIL_RATE, SMS_RATE messages a second in all)."""
    rate = settings.EMAIL_RATE if channel == EMAIL else settings.SMS_RATE
    key = f"{channel}:{rate}"
    if key not in _limiters:
        cache = settings.CACHES["default"]
        redis_url = cache["LOCATION"] if cache["BACKEND"].endswith("RedisCache") else None
        _limiters[key] = SharedRateLimiter(
            name=f"delivery-{channel}", rate=rate, fallback_rate=rate / 4 if redis_url else rate, redis_url=redis_url
        )
    return _limiters[key]


def due(channel: str):
    now = timezone.now()
    return Message.objects.filter(channel=channel, status=Message.QUEUED).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )


def send_queued(channel: str, *, limit: int | None = None) -> int:
    """Send due messages of `channel` until none is due, for at most RUN_SLICE_SECONDS (then a fresh task goes
    on). Returns how many were handed to the provider."""
    now = timezone.now()
    run = SendingRun.objects.create(channel=channel, status=SendingRun.RUNNING, heartbeat_at=now)
    heartbeat = Heartbeat(SendingRun.objects.filter(pk=run.pk, status=SendingRun.RUNNING))
    limiter = limiter_for(channel)
    transport = transport_for(channel)
    slice_ends = time.monotonic() + settings.RUN_SLICE_SECONDS
    sent = 0
    try:
        with heartbeat.keep_beating():
            while heartbeat() and (limit is None or sent < limit):
                if time.monotonic() > slice_ends:
                    services.nudge_senders(channel)
                    break
                message = _take_next(channel, run)
                if message is None:
                    if not _wait_for_next_due(channel):
                        break
                    continue
                # The slot is booked once a message is in hand: a run that finds none spends no one's slot.
                limiter.wait()
                if _send_one(message, transport, run):
                    sent += 1
    finally:
        transport.close()
        SendingRun.objects.filter(pk=run.pk, status=SendingRun.RUNNING).update(
            status=SendingRun.FINISHED, finished_at=timezone.now(), sent=sent
        )
    return sent


def send_now(message: Message) -> Message:
    """Send this one queued message in this process (a person waits for it: a holder's "send my pass"),
    under the same rules as a worker's run: taken from queued to sending first, once. A transient failure
    leaves it queued for the workers to try again. Returns the row as it ended."""
    run = SendingRun.objects.create(channel=message.channel, status=SendingRun.RUNNING, heartbeat_at=timezone.now())
    transport = transport_for(message.channel)
    try:
        now = timezone.now()
        if Message.objects.filter(pk=message.pk, status=Message.QUEUED).update(
            status=Message.SENDING, attempts=message.attempts + 1, run=run, sending_at=now, updated_at=now
        ):
            message.attempts += 1
            limiter_for(message.channel).wait()
            _send_one(message, transport, run)
    finally:
        transport.close()
        SendingRun.objects.filter(pk=run.pk).update(status=SendingRun.FINISHED, finished_at=timezone.now())
    message.refresh_from_db()
    return message


def _wait_for_next_due(channel: str) -> bool:
    """Sleep until the next retry of `channel` if it is due within WAIT_IN_PLACE_SECONDS; False if none is."""
    soon = timezone.now() + timedelta(seconds=WAIT_IN_PLACE_SECONDS)
    next_due = (
        Message.objects.filter(channel=channel, status=Message.QUEUED, not_before__lte=soon)
        .order_by("not_before")
        .values_list("not_before", flat=True)
        .first()
    )
    if next_due is None:
        return False
    time.sleep(max(0.0, min(WAIT_IN_PLACE_SECONDS, (next_due - timezone.now()).total_seconds())) + 0.01)
    return True


def _take_next(channel: str, run: SendingRun) -> Message | None:
    """Mark the oldest due message `sending` for this run, committed, in one statement (one round trip: the
    worker's own cost per message is what limits a send's speed); None when none is due or free.

    Under PostgreSQL the inner SELECT locks the row it picks and skips rows another worker holds (two workers
    never take one row); SQLite has no row locks, but runs one writing statement at a time, and the outer
    `status` check keeps the compare-and-set either way."""
    table = Message._meta.db_table
    lock = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    update = (
        f"UPDATE {table} SET status = %s, attempts = attempts + 1, run_id = %s, sending_at = %s, updated_at = %s "
        f"WHERE id = (SELECT id FROM {table} WHERE channel = %s AND status = %s "
        f"AND (not_before IS NULL OR not_before <= %s) ORDER BY id LIMIT 1{lock}) AND status = %s"
    )
    params = [Message.SENDING, run.pk, now, now, channel, Message.QUEUED, now, Message.QUEUED]
    if connection.features.can_return_columns_from_insert:
        taken = list(Message.objects.raw(update + " RETURNING *", params))
        return taken[0] if taken else None
    # SQLite before 3.35 (which Django 5.2 still accepts) has no RETURNING: the run holds one message at a time,
    # so the one in `sending` for this run is the one just taken.
    with connection.cursor() as cursor:
        cursor.execute(update, params)
        if not cursor.rowcount:
            return None
    return Message.objects.filter(run=run, status=Message.SENDING).order_by("-pk").first()


def _send_one(message: Message, transport, run: SendingRun) -> bool:
    """Hand `message` to its provider and record what happened; whether it was sent. After a 429 the run
    pauses for its Retry-After (bounded): the provider asked every message to wait, not only this one."""
    mine = Message.objects.filter(pk=message.pk, status=Message.SENDING, run=run)
    try:
        provider_id = transport.send(message)
    except DeliveryFailure as failure:
        _record_failure(message, failure, mine)
        if failure.retry_after:
            time.sleep(min(failure.retry_after, PAUSE_AFTER_429_MAX))
        return False
    now = timezone.now()
    if not mine.update(status=Message.SENT, provider_id=provider_id[:200], reason="", sent_at=now, updated_at=now):
        logger.error("Message %s was sent, but a sweep had taken it back from this worker", message.pk)
    return True


def _record_failure(message: Message, failure: DeliveryFailure, mine) -> None:
    now = timezone.now()
    if failure.suppress:
        services.suppression_add(channel=message.channel, address=message.to, reason=failure.suppress)
    if failure.transient and message.attempts < MAX_ATTEMPTS:
        wait = failure.retry_after
        if wait is None:
            wait = settings.DELIVERY_RETRY_SECONDS * 2 ** (message.attempts - 1)
        reason = f"{failure.reason} Trying again (attempt {message.attempts + 1} of {MAX_ATTEMPTS})."
        mine.update(
            status=Message.QUEUED, reason=reason[:500], not_before=now + timedelta(seconds=wait), updated_at=now
        )
        logger.info("Message %s: %s", message.pk, failure.reason)
        return
    reason = failure.reason if not failure.transient else f"{failure.reason} Gave up after {message.attempts} tries."
    mine.update(status=Message.FAILED, reason=reason[:500], updated_at=now)
    logger.warning("Message %s failed: %s", message.pk, failure.reason)


# --- the recovery sweep ----------------------------------------------------------------------------------------
def delivery_sweep() -> dict[str, int]:
    """Beat, every SWEEP_INTERVAL (settings.RECOVERY_SWEEPS): take back the message each dead run was sending,
    and nudge a sender for each channel with due messages and no live run."""
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)
    recovered = 0
    for run in SendingRun.objects.filter(status=SendingRun.RUNNING, heartbeat_at__lt=stale)[:100]:
        if SendingRun.objects.filter(pk=run.pk, status=SendingRun.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=SendingRun.DIED, finished_at=timezone.now()
        ):
            logger.warning("Sending run %s: no heartbeat since %s; its message goes back", run.pk, run.heartbeat_at)
            recovered += _take_back(Message.objects.filter(run=run, status=Message.SENDING))
    # A row left in sending by a run that is not running any more (it ended between two writes).
    recovered += _take_back(
        Message.objects.filter(status=Message.SENDING, sending_at__lt=stale).exclude(run__status=SendingRun.RUNNING)
    )
    nudged = 0
    for channel in (EMAIL, SMS):
        live = SendingRun.objects.filter(channel=channel, status=SendingRun.RUNNING, heartbeat_at__gte=stale)
        if due(channel).exists() and not live.exists():
            services.nudge_senders(channel)
            nudged += 1
    SendingRun.objects.filter(
        status__in=[SendingRun.FINISHED, SendingRun.DIED], finished_at__lt=timezone.now() - timedelta(days=1)
    ).delete()
    return {"recovered": recovered, "nudged": nudged}


def _take_back(rows) -> int:
    count = 0
    now = timezone.now()
    for message in rows:
        same = Message.objects.filter(pk=message.pk, status=Message.SENDING, run_id=message.run_id)
        if message.attempts >= MAX_ATTEMPTS:
            same.update(status=Message.FAILED, reason=WORKER_DIED_TOO_OFTEN.format(n=message.attempts), updated_at=now)
        elif same.update(status=Message.QUEUED, reason=WORKER_DIED, not_before=None, updated_at=now):
            count += 1
            services.nudge_senders(message.channel)
    return count


__all__ = ["send_queued", "delivery_sweep", "EMAIL", "SMS"]
