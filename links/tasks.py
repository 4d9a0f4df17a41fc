"""Celery entry point for link batches: thin, it takes a batch id and calls the service."""
from celery import shared_task

from . import services


# acks_late + reject_on_worker_lost: a worker that dies mid-file leaves the message unacknowledged, so the
# broker hands it to another worker, and the service starts the batch again from its first row.
@shared_task(name="links.process_link_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_link_batch(batch_id: int) -> None:
    services.link_batch_process(batch_id=batch_id)
