"""The SmartPages client against the sandbox over HTTP: how long one call may take when SmartPages keeps asking
it to wait."""

import threading
import time
import uuid

from templates_sync.client import TransientError, client_from_settings
from templates_sync.sandbox import Faults


def test_a_retry_after_longer_than_the_cap_is_waited_out_only_for_the_cap(sandbox, settings):
    """Every answer is 429 with Retry-After: one hour. The call gives up after its tries, each wait cut to
    SMARTPAGES_RETRY_AFTER_MAX, instead of sleeping an hour before each."""
    settings.SMARTPAGES_RETRY_AFTER_MAX = 1
    sandbox.faults = Faults(rate_limit_rate=1.0, retry_after=3600, scope="passes")
    sandbox.reset_counts()
    outcome = {}

    def call():
        started = time.monotonic()
        with client_from_settings() as client:
            try:
                client.get_pass(str(uuid.uuid4()))
            except TransientError as exc:
                outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    # In a thread of its own, so that an uncapped wait fails this test instead of holding it for hours.
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "the call still waits out the hour-long Retry-After"
    assert outcome["error"].status == 429
    assert sandbox.request_count("GET") == 7  # the first try and six retries, each after a capped wait
    assert 6 <= outcome["seconds"] < 30
