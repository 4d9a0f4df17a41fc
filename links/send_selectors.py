"""Reads for a batch's sending: its funnel (rows → links → sent → delivered per channel → opened → claimed) and
its messages in the outbox, by the subject keys links gave them (`batch:<pk>:row:<n>`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db.models import QuerySet

from delivery import selectors as delivery_selectors
from delivery.models import Message
from members.csv_cells import safe_cells

from .models import LinkBatch, LinkBatchSend, LinkClaim, LinkOpen
from .services.sending import batch_key_prefix, row_of_key

STATUS_CHOICES = Message.STATUSES
CHANNEL_LABELS = {"email": "Email", "sms": "SMS"}
# A message counts as sent once the outbox handed it to the provider, whatever the provider said later.
SENT_STATUSES = frozenset(Message.HANDED_OVER)


@dataclass
class ChannelCounts:
    channel: str
    label: str
    queued: int = 0  # waiting or being sent
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    failed: int = 0
    skipped: int = 0


@dataclass
class BatchFunnel:
    rows: int
    links: int
    channels: list[ChannelCounts] = field(default_factory=list)
    opened: int = 0
    claimed: int = 0  # rows with at least one claim

    @property
    def sent(self) -> int:
        return sum(channel.sent for channel in self.channels)

    @property
    def delivered(self) -> int:
        return sum(channel.delivered for channel in self.channels)

    @property
    def failed(self) -> int:
        return sum(channel.failed for channel in self.channels)

    @property
    def waiting(self) -> int:
        return sum(channel.queued for channel in self.channels)

    @property
    def any_messages(self) -> bool:
        return bool(self.channels)


def batch_funnel(*, batch: LinkBatch) -> BatchFunnel:
    funnel = BatchFunnel(rows=batch.rows_done, links=batch.links)
    for channel, statuses in sorted(delivery_selectors.status_counts(batch_key_prefix(batch.pk)).items()):
        counts = ChannelCounts(channel=channel, label=CHANNEL_LABELS.get(channel, channel))
        counts.queued = statuses.get(Message.QUEUED, 0) + statuses.get(Message.SENDING, 0)
        counts.sent = sum(n for status, n in statuses.items() if status in SENT_STATUSES)
        counts.delivered = statuses.get(Message.DELIVERED, 0) + statuses.get(Message.COMPLAINED, 0)
        counts.bounced = statuses.get(Message.BOUNCED, 0)
        counts.failed = statuses.get(Message.FAILED, 0)
        counts.skipped = statuses.get(Message.SKIPPED, 0)
        funnel.channels.append(counts)
    funnel.opened = LinkOpen.objects.filter(batch_id=batch.pk).count()
    funnel.claimed = (
        LinkClaim.objects.filter(batch_id=batch.pk, row__isnull=False).values("row").distinct().order_by().count()
    )
    return funnel


def batch_messages(*, batch: LinkBatch, status: str | None = None) -> QuerySet[Message]:
    """The batch's messages, newest first; `status` one of Message.STATUSES (anything else: all)."""
    known = {value for value, _ in STATUS_CHOICES}
    return delivery_selectors.messages(
        key_prefix=batch_key_prefix(batch.pk), status=status if status in known else None
    )


def batch_sends(*, batch: LinkBatch) -> QuerySet[LinkBatchSend]:
    return batch.sends.select_related("by")


MESSAGES_CSV_HEADER = ["row", "channel", "to", "language", "status", "reason", "queued_at", "sent_at", "updated_at"]


def batch_messages_csv(*, batch: LinkBatch, status: str | None = None) -> Iterator[list[str]]:
    """The delivery table as CSV rows (header first), formula-safe. The message texts (which hold the links)
    are left out: the links file has its own permission and download record."""
    yield MESSAGES_CSV_HEADER
    rows = batch_messages(batch=batch, status=status).values_list(
        "subject_key", "channel", "to", "language", "status", "reason", "queued_at", "sent_at", "updated_at"
    )
    for key, channel, to, language, state, reason, queued_at, sent_at, updated_at in rows.iterator(chunk_size=2000):
        yield safe_cells(
            [
                str(row_of_key(key) or ""),
                channel,
                to,
                language,
                state,
                reason,
                queued_at.isoformat() if queued_at else "",
                sent_at.isoformat() if sent_at else "",
                updated_at.isoformat() if updated_at else "",
            ]
        )
