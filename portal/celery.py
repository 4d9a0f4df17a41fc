"""The Celery app: configured from Django settings (CELERY_*), tasks found in every installed app.

Logging follows Django's: Celery keeps its hands off the root logger and applies settings.LOGGING instead,
so worker and beat write the same format as web, at LOG_LEVEL (the `--loglevel` option has no effect).
"""

import logging.config
import os

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from background.broker import keep_worker_through_broker_loss, write_filesystem_messages_whole

from .checks import refuse_to_start_misconfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# A worker must outlive a Redis outage even while it holds an unacknowledged message, and the embedded mode's
# worker must never read a message file half written (background/broker.py).
keep_worker_through_broker_loss()
write_filesystem_messages_whole()

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _logging_from_django_settings(**kwargs) -> None:
    logging.config.dictConfig(settings.LOGGING)


@worker_init.connect
@beat_init.connect
def _refuse_to_start_misconfigured(**kwargs) -> None:
    try:
        refuse_to_start_misconfigured()
    except ImproperlyConfigured as exc:
        # Celery logs and swallows an ordinary exception from a signal handler; SystemExit it lets through.
        raise SystemExit(f"Refusing to start: {exc}") from None
