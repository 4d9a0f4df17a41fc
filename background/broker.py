"""A worker that outlives a Redis outage while it holds unacknowledged messages.

kombu 5.7.0 (the newest release) loses a worker when Redis goes away while the worker holds a message it has
not acknowledged (a task running with acks_late, one prefetched, or a delayed one): on the lost connection the
consumer closes its channel, the channel gives its unacknowledged messages back to Redis, and that needs a
Redis client whose connection details were already dropped, so an AttributeError ("'NoneType' object has no
attribute 'hostname'") escapes and Celery stops with "Unrecoverable error". Nobody is left to start it again.

The same happens when a task that ran through the outage finishes and acknowledges its message on that closed
channel. `keep_worker_through_broker_loss()` makes the give-back and the acknowledgement best effort: when the
client cannot even be made, the messages are left where they are (Redis keeps them in its unacked hash while it
keeps its data, and gives them back after the visibility timeout; a Redis that lost its memory lost them
anyway), the worker logs it, and reconnects as it does after any other connection loss. Nothing is lost for the portal: every piece of work is a
row first, and the recovery sweep sends again whatever lost its message (background.recovery). The portal also
holds no delayed messages at all: retries due later wait in rows (docs/operations.md).

Applied to kombu 5.7.x only (requirements.txt pins it); a test starts a real worker, stops its redis-server and
checks the same process goes on (portal/tests/test_broker_outage.py).
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from time import monotonic

logger = logging.getLogger(__name__)
_PATCHED = "_smartpass_keeps_worker"


def keep_worker_through_broker_loss() -> bool:
    """Make kombu's Redis QoS give back and acknowledge messages of a channel the broker loss closed on a
    best-effort basis. True when applied."""
    import kombu
    from kombu.transport import redis as kombu_redis

    if not kombu.__version__.startswith("5.7."):
        logger.warning("kombu %s: the broker-loss guard is for 5.7.x and was not applied", kombu.__version__)
        return False
    qos = kombu_redis.QoS
    if getattr(qos.restore_unacked, _PATCHED, False):
        return True

    def guarded(method, what: str):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except AttributeError:
                # The channel's transport has no connection details left: the broker went away, and this
                # channel was closed for it. Nothing can be given back or acknowledged on it; the messages are
                # left to Redis (visibility timeout) and to the recovery sweep, and the worker goes on.
                count = len(self._delivered) if what == "give back" else 1
                if what == "give back":
                    self._delivered.clear()
                elif args:
                    self._delivered.pop(args[0], None)
                logger.warning(
                    "Redis went away: %d message(s) of a closed channel not %s; left to Redis and the recovery sweep",
                    count,
                    "given back" if what == "give back" else "acknowledged",
                )
                return None

        setattr(call, _PATCHED, True)
        return call

    qos.restore_unacked = guarded(qos.restore_unacked, "give back")
    qos.ack = guarded(qos.ack, "acknowledge")
    qos.reject = guarded(qos.reject, "acknowledge")
    return True


def write_filesystem_messages_whole() -> bool:
    """Make kombu's filesystem transport (the embedded mode of `make run`) write each message whole.

    kombu 5.7.0 creates the message file under its final name and only then writes it, so a worker listing the
    folder at that moment reads an empty file, and its JSONDecodeError stops the worker ("Unrecoverable
    error"; seen within seconds of a start, when beat, the sweeps and the web process all send at once). Here
    the message is written to a file whose name the reader never takes (no `.QUEUE.msg` ending) and renamed to
    its final name, which is atomic on one filesystem. True when applied."""
    from kombu.exceptions import ChannelError
    from kombu.transport import filesystem
    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    channel = filesystem.Channel
    if getattr(channel._put, _PATCHED, False):
        return True

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"  # kombu's own name: same order
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"writing-{uuid.uuid4().hex}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            if os.path.exists(partial):
                os.remove(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    setattr(_put, _PATCHED, True)
    channel._put = _put
    return True
