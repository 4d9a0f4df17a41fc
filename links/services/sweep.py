"""Stopping a batch, and the recovery sweep that sends again the link work whose message was lost."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.recovery import requeue_stale, resend_waiting

from ..models import LinkBatch, LinkChunk
from .processing import FINISH_TASK, _send_chunk
from .upload import LinkUploadError, _enqueue

logger = logging.getLogger(__name__)


# --- cancel and sweep ------------------------------------------------------------------------------------------
def link_batch_cancel(*, batch: LinkBatch, user) -> LinkBatch:
    """Stop a queued or running batch: its chunks stop at their next beat (within a second); the rows made
    until then are kept as a partial result, assembled by a worker."""
    who = user.get_username() if user is not None else "the command"
    with transaction.atomic():
        cancelled = LinkBatch.objects.filter(
            pk=batch.pk, status__in=[LinkBatch.Status.QUEUED, LinkBatch.Status.RUNNING]
        ).update(
            status=LinkBatch.Status.CANCELLED,
            finished_at=timezone.now(),
            error=f"Cancelled by {who}; the result holds the rows made until then.",
        )
        if not cancelled:
            raise LinkUploadError("Only a batch that is queued or running can be cancelled.")
        enqueue_after_commit(FINISH_TASK, batch.pk)
    batch.refresh_from_db()
    return batch


def link_batches_sweep() -> dict[str, int]:
    """Send again the work whose message was lost (background.recovery): batches queued for long (the
    broker was down when they were confirmed), chunks whose worker stopped beating (killed), chunks waiting
    while their batch shows no life, and batches whose chunks are all done but were never assembled. Each is
    sent at most once per RUN_STALE_SECONDS; a chunk or batch already taken is left alone by the task."""
    now = timezone.now()
    stale_seconds = settings.RUN_STALE_SECONDS
    stale = now - timedelta(seconds=stale_seconds)
    sent = {"assemblies": 0}
    sent["batches"] = resend_waiting(
        LinkBatch.objects.all(), lambda batch: _enqueue(batch.pk), stale_seconds=stale_seconds
    )
    running = LinkChunk.objects.filter(batch__status=LinkBatch.Status.RUNNING)
    sent["chunks"] = resend_waiting(
        running.filter(batch__heartbeat_at__lt=stale), _send_chunk, stale_seconds=stale_seconds
    ) + requeue_stale(running, _send_chunk, stale_seconds=stale_seconds)
    all_done = LinkBatch.objects.filter(status=LinkBatch.Status.RUNNING, heartbeat_at__lt=stale).exclude(
        chunks__status__in=[LinkChunk.Status.QUEUED, LinkChunk.Status.RUNNING]
    )
    cancelled = LinkBatch.objects.filter(status=LinkBatch.Status.CANCELLED, output_file="", finished_at__lt=stale)
    for batch_id in [*all_done.values_list("pk", flat=True), *cancelled.values_list("pk", flat=True)]:
        LinkBatch.objects.filter(pk=batch_id).update(heartbeat_at=now)
        enqueue_after_commit(FINISH_TASK, batch_id)
        sent["assemblies"] += 1
    return sent
