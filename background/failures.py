"""One way to say why a run of background work failed, in a sentence staff can act on.

Known causes get their own words: a full media storage (ENOSPC, or a quota) and a lost database connection.
Anything else is a bug or a fault nobody foresaw: the traceback goes to the worker log under a short reference,
and the sentence names that reference, so support finds the one in the other. No exception text ever reaches a
page (it may hold paths, values of a holder's row, or SQL).
"""

from __future__ import annotations

import errno
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

STORAGE_FULL = (
    "The media storage is full, so nothing more could be written. Free space there (or ask whoever runs the "
    "portal to), then run it again."
)
DATABASE_LOST = (
    "The connection to the database was lost during the run; what was written stays. Run it again once the "
    "database answers."
)
UNEXPECTED = "Something went wrong {what} (reference {reference}). Run it again or contact support with the reference."
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
T = TypeVar("T")
logger = logging.getLogger(__name__)


def is_storage_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, says the disk (or a quota) is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_database_lost(exc: BaseException | None) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError))


def failure_message(exc: BaseException, *, what: str, subject: str, logger: logging.Logger) -> str:
    """The sentence a failed run shows staff for `exc`, and the worker log entry that goes with it.

    `what` finishes "Something went wrong …" ("while making the links"); `subject` names the run in the log
    ("Link batch 12"). Call it from the `except` block that caught `exc`, so the traceback is logged."""
    if is_storage_full(exc):
        logger.error("%s failed: the media storage is full (%s)", subject, exc)
        return STORAGE_FULL
    if is_database_lost(exc):
        logger.exception("%s failed: the database connection was lost", subject)
        return DATABASE_LOST
    reference = uuid.uuid4().hex[:8]
    logger.exception("%s failed (reference %s)", subject, reference)
    return UNEXPECTED.format(what=what, reference=reference)


def on_a_working_connection(write: Callable[[], T], *, tries: int, subject: str) -> T:
    """Run `write()`, again on a fresh connection (up to `tries` times in all) when the database connection
    breaks under it: backends killed one after another, a failover. For a write that must not be lost now (a
    Pass ID that exists upstream, a chunk that would otherwise wait minutes for the sweep). Inside an atomic
    block nothing is tried again: the transaction the write belonged to is gone with its connection."""
    for attempt in range(1, tries + 1):
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if attempt == tries or connection.in_atomic_block:
                logger.error("%s could not be written: the database connection broke %s times", subject, attempt)
                raise
            # A warning without the traceback: the try on the new connection usually succeeds, and a failover
            # would fill the log with tracebacks of errors nobody needs to act on. The last failure raises.
            text = str(exc).strip()
            cause = text.splitlines()[0] if text else type(exc).__name__
            logger.warning("Writing %s met a broken database connection (%s); trying a new one", subject, cause)
            connection.close()  # a broken connection stays broken; the next query opens a new one
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")
