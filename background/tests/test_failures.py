"""The one sentence a failed run shows staff: a full disk and a lost database in words, anything else a
reference that is in the worker log beside the traceback."""

import errno
import logging
import re

import pytest
from django.db import OperationalError, connection, transaction

from background.failures import DATABASE_LOST, STORAGE_FULL, failure_message, on_a_working_connection
from conftest import terminate_own_backend

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


@pytest.mark.django_db(transaction=True)
def test_a_write_whose_connection_is_killed_goes_again_on_a_fresh_one_until_its_tries_run_out(caplog):
    """Backends killed one after another: each try after a broken connection runs on a new one. A write whose
    connections keep breaking raises after its tries, and the log says what was not written."""
    pids = []

    def write_after_kills(kills: int):
        def write():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            if len(pids) <= kills:
                terminate_own_backend()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone()[0]

        return write

    with caplog.at_level(logging.WARNING, logger="background.failures"):
        assert on_a_working_connection(write_after_kills(2), tries=3, subject="test row 1") == 1
    assert len(set(pids)) == 3  # two killed backends, then the one the write finished on
    # Recovered: two warnings that say what broke, without a traceback to read through.
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(record.exc_info is None for record in warnings)
    assert "Writing test row 1 met a broken database connection (terminating connection" in warnings[0].getMessage()
    caplog.clear()

    pids.clear()
    with caplog.at_level(logging.ERROR, logger="background.failures"), pytest.raises(OperationalError):
        on_a_working_connection(write_after_kills(3), tries=3, subject="test row 2")
    connection.close()  # the caller's to mend: a request's end or a task's next close_old_connections
    assert len(set(pids)) == 3
    assert "test row 2 could not be written: the database connection broke 3 times" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_write_inside_a_transaction_is_not_tried_again_as_the_transaction_is_gone():
    tries = []

    def write():
        tries.append(1)
        terminate_own_backend()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    with pytest.raises(OperationalError), transaction.atomic():
        on_a_working_connection(write, tries=3, subject="test row 3")
    connection.close()
    assert len(tries) == 1
