"""The one way the portal hands work to a Celery worker: after the transaction that recorded it commits.

Work is always recorded in a row first (a queued SyncRun, a link batch, a pending member), so a task is only
a nudge: when the broker is unreachable the nudge is logged and dropped, the row stays as it was, and the
beat sweepers send it again. A holder's or a staff member's request therefore never fails because Redis did.

Tasks are named, not imported: each app's tasks module imports its services, so a service that imported its
tasks would close a cycle. It lives in background, the app every other app may import.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_after_commit(task_name: str, *args, **kwargs) -> None:
    """Send the task `task_name` with these arguments once the current transaction commits (at once outside
    one). Never raises for a broker error: it is logged, and the recorded work waits for its sweeper.

    Never with a countdown or an ETA: a worker holds such a message unacknowledged until it is due, which
    kombu 5.7 cannot give back when Redis goes away, and a Redis without persistence forgets it. Work due later
    waits in its row, and the recovery sweep sends it when due (docs/operations.md)."""

    def send() -> None:
        try:
            current_app.send_task(task_name, args=args, kwargs=kwargs)
        except Exception:  # noqa: BLE001 - any broker or connection error; the row is the source of truth
            logger.exception("Could not send task %s; the recorded work waits for its sweeper", task_name)

    transaction.on_commit(send)
