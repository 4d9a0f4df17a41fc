"""Celery entry points for link batches: thin, they take ids and call the services."""

from celery import shared_task

from . import services
from .services import sending


# acks_late + reject_on_worker_lost: a worker that dies mid-chunk leaves the message unacknowledged. The
# chunk row's heartbeat is what brings it back within seconds (the recovery sweep), not the broker's
# visibility timeout; a chunk delivered twice is made once. `tries` counts the immediate re-sends after a
# lost database connection (optional: messages queued before it existed still run).
@shared_task(name="links.process_link_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_link_batch(batch_id: int) -> None:
    services.link_batch_process(batch_id=batch_id, jobs=None)


@shared_task(name="links.process_link_chunk", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_link_chunk(chunk_id: int, tries: int = 0) -> None:
    services.link_chunk_process(chunk_id=chunk_id, tries=tries)


@shared_task(name="links.finish_link_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def finish_link_batch(batch_id: int, tries: int = 0) -> None:
    services.link_batch_finish_or_resend(batch_id=batch_id, tries=tries)


@shared_task(name="links.send_link_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def send_link_batch(send_id: int) -> None:
    sending.batch_send_run(send_id=send_id)
