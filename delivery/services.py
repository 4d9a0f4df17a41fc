"""Writes of the outbox: queueing messages, cancelling and retrying them, a synchronous test send, what the
providers' webhooks report, and the suppression list. The worker's side (taking and sending queued messages)
is delivery.sending."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import staff_action_record
from background.enqueue import enqueue_after_commit

from . import addresses
from .models import CHANNELS, EMAIL, SMS, Message, Suppression

logger = logging.getLogger(__name__)

SEND_TASK = "delivery.send_queued"
CANCELLED = "Cancelled by staff before it was sent."
SUPPRESSED = {
    Suppression.HARD_BOUNCE: "On the suppression list: an earlier message bounced.",
    Suppression.COMPLAINT: "On the suppression list: the holder reported an earlier message as spam.",
    Suppression.OPT_OUT: "On the suppression list: the holder opted out (STOP).",
}
UNAVAILABLE = {EMAIL: "Email is not set up (EMAIL_URL).", SMS: "SMS is not set up (SMS_URL)."}


@dataclass(frozen=True)
class MessageSpec:
    subject_key: str
    channel: str  # "email" | "sms"
    to: str
    text: str
    subject: str = ""
    html: str = ""
    language: str = "is"


@dataclass
class QueueResult:
    queued: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (subject_key, reason)
    already: int = 0  # rows queued, sent or failed before: left as they are


@dataclass(frozen=True)
class SendOutcome:
    sent: bool
    reason: str = ""
    provider_id: str = ""


def channel_available(channel: str) -> bool:
    """Whether `channel` can send: email when EMAIL_URL or ANYMAIL_BACKEND is set, SMS when SMS_URL is; both
    in DEBUG (the local outbox)."""
    if channel == EMAIL:
        return bool(settings.EMAIL_CONFIGURED or settings.DEBUG)
    if channel == SMS:
        return bool(settings.SMS_URL or settings.DEBUG)
    return False


def suppression_reason(channel: str, address: str) -> str:
    """Why `address` is suppressed on `channel` (a sentence), or ""."""
    reason = Suppression.objects.filter(channel=channel, address=address).values_list("reason", flat=True).first()
    return SUPPRESSED.get(reason, "") if reason else ""


def queue_messages(specs: Iterable[MessageSpec], *, batch_size: int = 1000) -> QueueResult:
    """Record one message per (subject key, channel) and nudge the senders once the transaction commits.

    Queueing a key again leaves a queued, sending, sent or failed row as it is (failed rows go again through
    `retry_failed`); a skipped row (cancelled, suppressed, a bad address) is looked at afresh with the new
    content. Invalid and suppressed addresses become `skipped` rows with the reason, and are listed."""
    result = QueueResult()
    channels_queued: set[str] = set()
    batch: list[MessageSpec] = []
    for spec in specs:
        batch.append(spec)
        if len(batch) >= batch_size:
            _queue_batch(batch, result, channels_queued)
            batch = []
    if batch:
        _queue_batch(batch, result, channels_queued)
    for channel in sorted(channels_queued):
        nudge_senders(channel)
    return result


def _queue_batch(specs: list[MessageSpec], result: QueueResult, channels_queued: set[str]) -> None:
    valid_channels = {value for value, _label in CHANNELS}
    rows: list[Message] = []
    for spec in specs:
        if spec.channel not in valid_channels:
            raise ValueError(f"Unknown channel {spec.channel!r}")
        to, problem = addresses.normalise(spec.channel, spec.to)
        if not problem and not channel_available(spec.channel):
            problem = UNAVAILABLE[spec.channel]
        rows.append(
            Message(
                subject_key=spec.subject_key,
                channel=spec.channel,
                to=to or spec.to[:254],
                language=spec.language,
                subject=spec.subject[:300],
                text=spec.text,
                html=spec.html,
                status=Message.SKIPPED if problem else Message.QUEUED,
                reason=problem,
            )
        )
    suppressed = _suppressed({(row.channel, row.to) for row in rows if row.status == Message.QUEUED})
    for row in rows:
        if row.status == Message.QUEUED and (row.channel, row.to) in suppressed:
            row.status, row.reason = Message.SKIPPED, SUPPRESSED[suppressed[(row.channel, row.to)]]
    with transaction.atomic():
        existing = {
            (message.subject_key, message.channel): message
            for message in Message.objects.select_for_update().filter(subject_key__in={row.subject_key for row in rows})
        }
        new, again = [], []
        for row in rows:
            old = existing.get((row.subject_key, row.channel))
            if old is None:
                new.append(row)
            elif old.status == Message.SKIPPED:
                row.pk, row.queued_at = old.pk, old.queued_at
                again.append(row)
            else:
                result.already += 1
                continue
            if row.status == Message.SKIPPED:
                result.skipped.append((row.subject_key, row.reason))
            else:
                result.queued += 1
                channels_queued.add(row.channel)
        # A key queued by two requests at once: the unique constraint keeps one row, the other is dropped.
        Message.objects.bulk_create(new, batch_size=1000, ignore_conflicts=True)
        if again:
            for row in again:
                row.attempts, row.not_before, row.provider_id = 0, None, ""
            Message.objects.bulk_update(
                again,
                [
                    "to",
                    "language",
                    "subject",
                    "text",
                    "html",
                    "status",
                    "reason",
                    "attempts",
                    "not_before",
                    "provider_id",
                ],
                batch_size=1000,
            )


def _suppressed(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    if not pairs:
        return {}
    query = Q()
    for channel in {channel for channel, _to in pairs}:
        query |= Q(channel=channel, address__in=[to for c, to in pairs if c == channel])
    return {(row.channel, row.address): row.reason for row in Suppression.objects.filter(query)}


def send_one_now(spec: MessageSpec) -> Message:
    """Record one message and send it in this process (a person waits: a holder's "send my pass"). Its subject
    key must be new. Returns the row: sent, queued (a transient failure: the workers try again), failed or
    skipped, with the reason."""
    from .sending import send_now

    _queue_batch([spec], QueueResult(), set())  # no nudge: this process sends it
    message = Message.objects.get(subject_key=spec.subject_key, channel=spec.channel)
    if message.status != Message.QUEUED:
        return message
    return send_now(message)


def nudge_senders(channel: str) -> None:
    """Send DELIVERY_SENDERS tasks for `channel` after commit: that many workers may send in parallel (the
    shared limiter holds their sum to the channel's rate); a task that finds nothing due ends at once."""
    for _ in range(settings.DELIVERY_SENDERS):
        enqueue_after_commit(SEND_TASK, channel)


def _prefixed(key_prefix: str):
    return Message.objects.filter(subject_key__startswith=key_prefix)


def cancel(key_prefix: str) -> int:
    """Stop every queued message whose key starts with `key_prefix`: each becomes skipped ("cancelled").
    A message a worker is sending now finishes; the worker takes no cancelled one after it."""
    return (
        _prefixed(key_prefix)
        .filter(status=Message.QUEUED)
        .update(status=Message.SKIPPED, reason=CANCELLED, not_before=None, updated_at=timezone.now())
    )


def retry_failed(key_prefix: str) -> int:
    """Queue again every failed message under `key_prefix` ("Send again": failed rows only); returns how many."""
    with transaction.atomic():
        failed = _prefixed(key_prefix).filter(status=Message.FAILED)
        channels = set(failed.values_list("channel", flat=True).distinct())
        count = failed.update(status=Message.QUEUED, reason="", attempts=0, not_before=None, updated_at=timezone.now())
        for channel in channels:
            nudge_senders(channel)
    return count


def send_test(spec: MessageSpec) -> SendOutcome:
    """Send one message now, in this process, recorded nowhere (a manager's test send to their own address).
    Suppression does not apply: the manager chose the address."""
    from .transports import DeliveryFailure, transport_for

    to, problem = addresses.normalise(spec.channel, spec.to)
    if problem:
        return SendOutcome(sent=False, reason=problem)
    if not channel_available(spec.channel):
        return SendOutcome(sent=False, reason=UNAVAILABLE[spec.channel])
    message = Message(
        subject_key=spec.subject_key,
        channel=spec.channel,
        to=to,
        language=spec.language,
        subject=spec.subject,
        text=spec.text,
        html=spec.html,
    )
    message.pk = 0
    transport = transport_for(spec.channel)
    try:
        return SendOutcome(sent=True, provider_id=transport.send(message))
    except DeliveryFailure as failure:
        return SendOutcome(sent=False, reason=failure.reason)
    finally:
        transport.close()


# --- what the providers report -------------------------------------------------------------------------------
PROVIDER_STATUSES = {Message.DELIVERED, Message.BOUNCED, Message.COMPLAINED, Message.FAILED}
# A later report never takes a message back: delivered can still become complained, never sent again.
_RANK = {Message.SENT: 0, Message.DELIVERED: 1, Message.FAILED: 1, Message.BOUNCED: 2, Message.COMPLAINED: 3}


def provider_status_record(
    *, provider_id: str, status: str, reason: str = "", suppress: str | None = None, channel: str | None = None
) -> Message | None:
    """A provider's report on the message it knows as `provider_id`: delivered, bounced, complained or failed;
    `suppress` puts the address on the suppression list (a hard bounce, a complaint). Unknown ids are logged
    and ignored (a message sent before this portal, or a test send). Returns the row, if found."""
    if status not in PROVIDER_STATUSES or not provider_id:
        return None
    rows = Message.objects.filter(provider_id=provider_id)
    if channel:
        rows = rows.filter(channel=channel)
    with transaction.atomic():
        message = rows.select_for_update().first()
        if message is None:
            logger.info("Provider status %s for an unknown message id; ignored", status)
            return None
        if message.status in _RANK and _RANK[status] >= _RANK[message.status] and status != message.status:
            message.status, message.reason = status, reason[:500]
            message.save(update_fields=["status", "reason", "updated_at"])
        if suppress:
            suppression_add(channel=message.channel, address=message.to, reason=suppress, detail=reason)
    return message


def suppression_add(*, channel: str, address: str, reason: str, detail: str = "") -> Suppression:
    """Put `address` on the suppression list (once: a second report leaves the first entry). Queued messages to
    it are skipped at once; later queues skip it."""
    normalised, problem = addresses.normalise(channel, address)
    address = normalised or address.strip().lower()
    try:
        with transaction.atomic():
            entry, _created = Suppression.objects.get_or_create(
                channel=channel, address=address, defaults={"reason": reason, "detail": detail[:300]}
            )
    except IntegrityError:
        entry = Suppression.objects.get(channel=channel, address=address)
    Message.objects.filter(channel=channel, to=address, status=Message.QUEUED).update(
        status=Message.SKIPPED, reason=SUPPRESSED.get(entry.reason, ""), updated_at=timezone.now()
    )
    return entry


def suppression_remove(*, entry: Suppression, actor, request=None) -> None:
    """A manager takes an address off the list (the holder asked to get messages again); audited."""
    before = {"channel": entry.channel, "address": entry.address, "reason": entry.reason}
    staff_action_record(
        actor=actor,
        action="delivery.suppression_remove",
        target=entry,
        object_repr=f"{entry.get_channel_display()} suppression",
        before=before,
        request=request,
    )
    entry.delete()


def suppression_opt_in(*, channel: str, address: str) -> int:
    """The holder asked for messages again (an SMS START): their opt-out (only that: never a bounce) goes."""
    normalised, _problem = addresses.normalise(channel, address)
    return Suppression.objects.filter(
        channel=channel, address=normalised or address, reason=Suppression.OPT_OUT
    ).delete()[0]
