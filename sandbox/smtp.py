"""A real SMTP server (aiosmtpd) for tests and demos, run as a process of its own:

    python -m sandbox.smtp --port 2525 --folder /tmp/inbox

Each message it accepts is written to the folder (one .eml file, with an `X-Envelope-To` line first) before it
answers 250, so a sender that saw 250 finds the file. Faults by recipient, so one run mixes them:
`refuse-…@` 550 at RCPT (an address that does not exist), `defer-…@` 451 at RCPT every time, `deferonce-…@`
451 the first time for each Message-ID, `dropone-…@` the connection closed at the first DATA of each
Message-ID (nothing accepted), `slow-…@` no answer to DATA for 60 s (a relay that hangs), `lag-…@` 0.3 s
before the 250 (a relay on a real network).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class FolderInbox:
    def __init__(self, folder: Path):
        self.folder = folder
        self.seen: set[tuple[str, bytes]] = set()
        self.lock = threading.Lock()

    def _first_time(self, kind: str, message_id: bytes) -> bool:
        with self.lock:
            if (kind, message_id) in self.seen:
                return False
            self.seen.add((kind, message_id))
            return True

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("refuse-"):
            return "550 5.1.1 No such user here"
        if local.startswith("defer-"):
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        local = envelope.rcpt_tos[0].split("@")[0].lower()
        found = _MESSAGE_ID.search(envelope.content)
        message_id = found.group(1) if found else b""
        if local.startswith("deferonce-") and self._first_time("defer", message_id):
            return "451 4.3.0 Greylisted, try again"
        if local.startswith("dropone-") and self._first_time("drop", message_id):
            server.transport.close()
            return "421 4.4.2 Connection dropped"
        if local.startswith("slow-"):
            await asyncio.sleep(60)
        if local.startswith("lag-"):
            await asyncio.sleep(0.3)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        header = ("X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n").encode()
        temporary = self.folder / f".{name}.tmp"
        temporary.write_bytes(header + envelope.content)
        os.replace(temporary, self.folder / f"{name}.eml")  # whole files only: a reader never sees half of one
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", required=True)
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(FolderInbox(folder), hostname="127.0.0.1", port=args.port, data_size_limit=10_000_000)
    controller.start()
    print(f"SMTP on 127.0.0.1:{args.port}, writing to {folder}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
