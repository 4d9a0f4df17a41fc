"""The embedded broker (kombu's filesystem transport, `make run`) with its messages written whole."""

from __future__ import annotations

import threading

import pytest
from kombu import Connection

from background.broker import write_filesystem_messages_whole

MESSAGES = 3000


@pytest.mark.slow  # takes seconds
def test_a_reader_draining_the_folder_while_two_writers_send_gets_every_message_whole(tmp_path):
    """kombu 5.7.0 names the file before writing it, and a reader that lists the folder in between reads an
    empty file and its worker stops. Written under another name and renamed, every message arrives whole."""
    assert write_filesystem_messages_whole()
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "store_processed": False}

    def send(first: int) -> None:
        with Connection("filesystem://", transport_options=options) as connection:
            queue = connection.SimpleQueue("work")
            for n in range(first, MESSAGES, 2):
                queue.put({"n": n, "pad": "x" * 2000})
            queue.close()

    received, errors = [], []
    with Connection("filesystem://", transport_options=options) as connection:
        queue = connection.SimpleQueue("work")  # declared before anyone sends
        writers = [threading.Thread(target=send, args=(first,)) for first in (0, 1)]
        for writer in writers:
            writer.start()
        while len(received) + len(errors) < MESSAGES:
            try:
                message = queue.get(timeout=10)
            except queue.Empty:
                break
            except ValueError as error:  # a half-written file: JSONDecodeError
                errors.append(error)
                continue
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    for writer in writers:
        writer.join()
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))
    assert not [name for name in folder.iterdir() if not name.name.endswith(".msg")]  # no partial file left
