"""The one sentence a failed run shows staff: a full disk and a lost database in words, anything else a
reference that is in the worker log beside the traceback."""

import errno
import logging
import re

from django.db import OperationalError

from background.failures import DATABASE_LOST, STORAGE_FULL, failure_message

logger = logging.getLogger("background.tests")


def _caught(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - what the callers do
        return failure_message(caught, what="while testing", subject="Test run 1", logger=logger)


def test_a_full_disk_says_the_media_storage_is_full_even_when_wrapped():
    assert _caught(OSError(errno.ENOSPC, "No space left on device")) == STORAGE_FULL
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise RuntimeError("could not store the chunk") from exc
    except RuntimeError as wrapped:
        assert failure_message(wrapped, what="x", subject="y", logger=logger) == STORAGE_FULL


def test_a_lost_database_connection_says_so():
    assert _caught(OperationalError("server closed the connection unexpectedly")) == DATABASE_LOST


def test_anything_else_names_a_reference_that_is_in_the_log_with_the_traceback(caplog):
    with caplog.at_level(logging.ERROR, logger="background.tests"):
        message = _caught(KeyError("secret row value"))
    reference = re.fullmatch(
        r"Something went wrong while testing \(reference ([0-9a-f]{8})\)\. Run it again or contact support with "
        r"the reference\.",
        message,
    ).group(1)
    assert "secret row value" not in message  # no exception text on a page
    (record,) = caplog.records
    assert record.getMessage() == f"Test run 1 failed (reference {reference})"
    assert record.exc_info[0] is KeyError
