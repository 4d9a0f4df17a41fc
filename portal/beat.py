"""Celery beat's scheduler, changed to send each entry at most once per interval, even across a restart.

Beat keeps an entry's last send time in its schedule file, which it writes only now and then: a beat killed
right after a send and started again took the entry as due and sent it a second time. Before each send this
scheduler takes a per-entry key in the cache (Redis: SET NX with an expiry slightly below the entry's
interval); when the key is already there, an earlier beat sent the entry within this interval and the send is
skipped. Chosen over django-celery-beat, which keeps the schedule in the database but has the same window
between a send and the write of its last-run time. When the cache cannot be reached the entry is sent: a
duplicate costs a little work, a missed sweep or sync costs more.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery.beat import PersistentScheduler, ScheduleEntry
from django.core.cache import cache
from django.utils import timezone

logger = logging.getLogger(__name__)

# The send key expires this fraction of the interval after a send, so the next regular send finds it gone.
SEND_KEY_SHARE = 0.9


class OnceScheduler(PersistentScheduler):
    def setup_schedule(self) -> None:
        # The schedule file (var/celerybeat-schedule, or --schedule) lives in a folder a fresh checkout or a new
        # container does not have yet; the stock scheduler crashes on it.
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()

    def apply_entry(self, entry: ScheduleEntry, producer=None) -> None:
        if not first_send_in_interval(entry):
            logger.info(
                "Beat: %s was already sent within its interval (by an earlier beat); not sent again", entry.name
            )
            return
        super().apply_entry(entry, producer=producer)


def first_send_in_interval(entry: ScheduleEntry) -> bool:
    """Take the entry's send key for this interval; False when an earlier send still holds it."""
    seconds = getattr(entry.schedule, "seconds", None)
    if not seconds:  # not an interval schedule (crontab): nothing to guard
        return True
    try:
        return bool(
            cache.add(f"beat:sent:{entry.name}", timezone.now().isoformat(), max(1, int(seconds * SEND_KEY_SHARE)))
        )
    except Exception:  # noqa: BLE001 - any cache error: send rather than miss the entry
        logger.warning("Beat: the send key of %s could not be taken; sending anyway", entry.name, exc_info=True)
        return True
