"""The local outbox of `make run` (DEBUG): every email and SMS is written as a file under OUTBOX_DIR
(var/outbox/email/*.eml, var/outbox/sms/*.json) instead of leaving the machine, and the DEBUG-only Outbox
page lists them. A demo shows the whole flow with no account anywhere."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend


def _folder(channel: str) -> Path:
    folder = Path(settings.OUTBOX_DIR) / channel
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _name() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


class OutboxEmailBackend(BaseEmailBackend):
    """Django email backend: one .eml file per message (the bytes an SMTP relay would get)."""

    def send_messages(self, email_messages) -> int:
        folder = _folder("email")
        for message in email_messages:
            (folder / f"{_name()}.eml").write_bytes(message.message().as_bytes(linesep="\n"))
        return len(email_messages)


def sms_write(*, to: str, body: str, language: str) -> str:
    """Write one SMS; returns its id (the file's name), as a provider's message id."""
    name = _name()
    record = {"to": to, "body": body, "language": language, "at": datetime.now(UTC).isoformat()}
    (_folder("sms") / f"{name}.json").write_text(json.dumps(record, ensure_ascii=False, indent=1))
    return f"outbox-{name}"


@dataclass(frozen=True)
class OutboxEntry:
    channel: str
    name: str
    at: datetime
    to: str
    subject: str
    text: str
    has_html: bool


def outbox_entries(limit: int = 200) -> list[OutboxEntry]:
    """The newest `limit` messages written to the outbox, newest first."""
    root = Path(settings.OUTBOX_DIR)
    files = sorted([*root.glob("email/*.eml"), *root.glob("sms/*.json")], key=lambda path: path.name, reverse=True)[
        :limit
    ]
    entries = []
    for path in files:
        at = datetime.strptime(path.name.split("-")[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            entries.append(OutboxEntry("sms", path.name, at, record["to"], "", record["body"], False))
            continue
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
        text_part = parsed.get_body(preferencelist=("plain",))
        entries.append(
            OutboxEntry(
                "email",
                path.name,
                at,
                str(parsed["To"]),
                str(parsed["Subject"] or ""),
                text_part.get_content() if text_part is not None else "",
                parsed.get_body(preferencelist=("html",)) is not None,
            )
        )
    return entries
