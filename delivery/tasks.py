"""Celery entry points of the outbox: thin, they call delivery.sending."""

from celery import shared_task

from . import sending


@shared_task(name="delivery.send_queued", ignore_result=True)
def send_queued(channel: str) -> int:
    return sending.send_queued(channel)
