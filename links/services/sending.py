"""Sending a finished batch's links to its holders by email and/or SMS: the one service behind the send page and
`manage.py send_links`.

Each row gets at most one message: by the first of the chosen channels it has an address for, in its language
(a language column, else the default), with its own name and link. The outbox (delivery) records one message
per (row, channel) under the key `batch:<pk>:row:<n>` and never queues a key twice, so sending again queues
only the rows not queued before. Rows without an address, with an error, or whose SMS would be too long are
not handed to the outbox: they are counted by reason on a LinkBatchSend record. Suppressed and invalid
addresses are the outbox's to refuse: they come back as skipped messages with the reason.

"Send to N holders" records the send (batch_send_request) and a worker queues its messages (batch_send_run),
recorded work as every other kind (background.recovery): rendering and queueing cost ~0.2 ms a row, so a
send of hundreds of thousands of rows would outlast the web request.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.services import staff_action_record
from background.enqueue import enqueue_after_commit
from background.failures import failure_message
from background.recovery import MAX_ATTEMPTS, requeue_stale, resend_waiting, take
from delivery import addresses as delivery_addresses
from delivery import selectors as delivery_selectors
from delivery import services as delivery
from delivery import sms as delivery_sms
from members.csv_cells import safe_cell
from members.services.pass_links import batch_row_subject_key

from ..messages import (
    DEFAULT_MAX_SEGMENTS,
    DEFAULT_MESSAGES,
    LANGUAGES,
    LanguageMessage,
    MessageError,
    check_language_message,
    render,
    render_html,
    row_language,
)
from ..models import LinkBatch, LinkBatchSend
from .chunk import ERROR_COLUMN, LINK_COLUMN, PASSKIT_LINK_COLUMN
from .summary import RowSummary

EMAIL, SMS = "email", "sms"
CHANNEL_CHOICES = {
    EMAIL: (EMAIL,),
    SMS: (SMS,),
    "email,sms": (EMAIL, SMS),
    "sms,email": (SMS, EMAIL),
}
SKIPPED = "skipped"
PREVIEW_ROWS = 3
SEND_TASK = "links.send_link_batch"

logger = logging.getLogger(__name__)

# Column names that hold a holder's language, name (lower-cased, compared whole).
_LANGUAGE_COLUMNS = {"language", "lang", "locale", "tungumál", "tungumal", "mál", "person.language"}
_NAME_WORDS = ("name", "nafn")


class SendError(ValueError):
    """A send that cannot go ahead; the text is a sentence for the manager."""


def row_key(batch_id: int, row: int) -> str:
    return batch_row_subject_key(batch_id, row)


def batch_key_prefix(batch_id: int) -> str:
    # The trailing ":row:" keeps batch 7's prefix from matching batch 70's keys.
    return f"batch:{batch_id}:row:"


def row_of_key(subject_key: str) -> int | None:
    tail = subject_key.rpartition(":row:")[2]
    return int(tail) if tail.isdigit() else None


# --- what is sent --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendColumns:
    """The columns of the upload that hold each holder's address, name and language ("" when none)."""

    email: str = ""
    phone: str = ""
    name: str = ""
    language: str = ""


@dataclass(frozen=True)
class SendOptions:
    channels: tuple[str, ...] = (EMAIL,)
    columns: SendColumns = SendColumns()
    default_language: str = "is"
    messages: dict[str, LanguageMessage] = field(default_factory=lambda: dict(DEFAULT_MESSAGES))
    max_segments: int = DEFAULT_MAX_SEGMENTS


def send_columns_guess(*, batch: LinkBatch) -> SendColumns:
    """The columns mapped to the template's email and phone fields, a name column, a language column."""
    formats = {field.identifier: field.format.upper() for field in batch.template.input_fields}
    email = phone = name = language = ""
    for column in batch.header:
        target = batch.mapping.get(column, "")
        fmt = formats.get(target, "")
        lowered = column.strip().lower()
        if fmt == "EMAIL" and not email:
            email = column
        elif fmt == "PHONE_NUMBER" and not phone:
            phone = column
        elif not name and any(word in lowered or word in target.lower() for word in _NAME_WORDS):
            name = column
        elif not language and lowered in _LANGUAGE_COLUMNS:
            language = column
    return SendColumns(email=email, phone=phone, name=name, language=language)


def send_options_check(*, batch: LinkBatch, options: SendOptions) -> None:
    """Refuse what cannot be sent, with a sentence that says what to change."""
    if batch.status != LinkBatch.Status.SUCCEEDED or not batch.output_file:
        raise SendError("Links can be sent once the batch has finished making them.")
    if not options.channels or any(channel not in (EMAIL, SMS) for channel in options.channels):
        raise SendError("Choose email, SMS, or both.")
    for channel in options.channels:
        if not delivery.channel_available(channel):
            raise SendError(delivery.UNAVAILABLE[channel])
    columns = options.columns
    for channel, column in ((EMAIL, columns.email), (SMS, columns.phone)):
        if channel in options.channels and not column:
            raise SendError(
                f"Choose the column that holds the {'email address' if channel == EMAIL else 'phone number'}."
            )
    for column in (columns.email, columns.phone, columns.name, columns.language):
        if column and column not in batch.header:
            raise SendError(f"The upload has no column “{column}”.")
    if options.default_language not in LANGUAGES:
        raise SendError("The default language is Icelandic (is) or English (en).")
    if not 1 <= options.max_segments <= 10:
        raise SendError("The SMS length allowed is 1 to 10 segments.")
    for language in LANGUAGES:
        message = options.messages.get(language)
        if message is None:
            raise SendError(f"The {LANGUAGES[language]} message is missing.")
        try:
            check_language_message(message, language=language)
        except MessageError as exc:
            raise SendError(str(exc)) from None


@dataclass
class BatchRow:
    number: int
    link: str
    error: str
    name: str = ""
    email: str = ""
    phone: str = ""
    language: str = "is"


def _unguarded(cell: str) -> str:
    """A cell as it was uploaded: the links file gives a cell a spreadsheet would evaluate a leading apostrophe
    (members.csv_cells.safe_cell); a holder's name must not carry it into a message."""
    if cell[:1] == "'" and safe_cell(cell[1:]) == cell:
        return cell[1:]
    return cell


def batch_rows(*, batch: LinkBatch, options: SendOptions) -> Iterator[BatchRow]:
    """Every row of the batch's links file, in order, with what sending needs."""
    header = batch.header
    width = len(header)
    position = {column: index for index, column in enumerate(header)}
    columns = options.columns

    def cell(cells: list[str], column: str) -> str:
        index = position.get(column)
        return _unguarded(cells[index]).strip() if index is not None and index < len(cells) else ""

    with default_storage.open(batch.output_file.name, "rb") as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter=batch.delimiter)
        file_header = next(reader, None)
        # The portal's format ends in smartpass_link and error; PassKit's in smartUrl, and error only when
        # some row has one.
        added = file_header[width:] if file_header is not None else []
        if not added or added[0] not in (LINK_COLUMN, PASSKIT_LINK_COLUMN) or added[1:] not in ([], [ERROR_COLUMN]):
            raise SendError("The links file of this batch cannot be read; make the links again.")
        for number, cells in enumerate(reader, start=1):
            padded = cells + [""] * (width + 2 - len(cells))
            yield BatchRow(
                number=number,
                link=padded[width],
                error=padded[width + 1] if not padded[width + 1].startswith("Warning:") else "",
                name=cell(cells, columns.name),
                email=cell(cells, columns.email),
                phone=cell(cells, columns.phone),
                language=row_language(cell(cells, columns.language), default=options.default_language),
            )


@dataclass
class RowMessage:
    """What one row gets (spec), or why it gets nothing (reason); the SMS's shape when it is an SMS."""

    row: BatchRow
    spec: delivery.MessageSpec | None = None
    reason: str = ""
    shape: delivery_sms.SmsShape | None = None
    address: str = ""  # the row's own address for the channel, normalised as the outbox stores it

    @property
    def html_body(self) -> str:
        """The email's HTML part inside its <body>, for showing in the staff page (made by messages.render_html
        from escaped text: nothing from the upload is markup)."""
        html = self.spec.html if self.spec is not None else ""
        start, end = html.find(">", html.find("<body")) + 1, html.rfind("</body>")
        return html[start:end] if 0 < start <= end else ""


def row_message(*, batch: LinkBatch, row: BatchRow, options: SendOptions, to: str | None = None) -> RowMessage:
    """The message of one row exactly as it is sent (`to` replaces its address: the test send)."""
    if row.error:
        return RowMessage(row=row, reason=f"The row has an error: {row.error}")
    if not row.link:
        return RowMessage(row=row, reason="The row has no link.")
    # The first channel with an address the outbox can take: an invalid email falls through to the phone.
    channel = problem = None
    for candidate in options.channels:
        address = row.email if candidate == EMAIL else row.phone
        if not address:
            continue
        normalised, why = delivery_addresses.normalise(candidate, address)
        if not why:
            channel = candidate
            break
        problem = problem or f"{why.rstrip('.')}: {address}"
    if channel is None:
        wanted = " or ".join("email address" if c == EMAIL else "phone number" for c in options.channels)
        return RowMessage(row=row, reason=problem or f"No address: the row has no {wanted}.")
    message = options.messages[row.language]
    key = row_key(batch.pk, row.number)
    if channel == EMAIL:
        spec = delivery.MessageSpec(
            subject_key=key,
            channel=EMAIL,
            to=to or row.email,
            subject=render(message.subject, name=row.name, link=row.link).replace("\n", " ").strip(),
            text=render(message.body, name=row.name, link=row.link),
            html=render_html(message.body, name=row.name, link=row.link),
            language=row.language,
        )
        return RowMessage(row=row, spec=spec, address=normalised)
    text = render(message.sms, name=row.name, link=row.link)
    shape = delivery_sms.segments(text)
    spec = delivery.MessageSpec(subject_key=key, channel=SMS, to=to or row.phone, text=text, language=row.language)
    if shape.segments > options.max_segments:
        return RowMessage(
            row=row,
            spec=spec,
            shape=shape,
            reason=_too_long_sms(shape, max_segments=options.max_segments, short_links=batch.short_links),
            address=normalised,
        )
    return RowMessage(row=row, spec=spec, shape=shape, address=normalised)


def _too_long_sms(shape: delivery_sms.SmsShape, *, max_segments: int, short_links: bool) -> str:
    """Why a row's SMS is not sent, in words staff use, with what they can do about it."""
    per_part = "67 characters, as it has letters such as ð, þ or á" if shape.encoding == "UCS-2" else "153 characters"
    remedies = (
        "shorten the text or allow longer SMS"
        if short_links
        else "shorten the text, allow longer SMS, or upload the file again with short links"
    )
    return (
        f"Too long for an SMS: it would be sent in {shape.segments} parts ({shape.characters} characters; each part "
        f"holds {per_part}), and at most {max_segments} are allowed. To send it, {remedies}."
    )


def batch_send_preview(*, batch: LinkBatch, options: SendOptions, count: int = PREVIEW_ROWS) -> list[RowMessage]:
    """The first `count` rows that get a message, rendered exactly as they will be sent (or, when fewer rows
    have one, the first rows with their reasons)."""
    send_options_check(batch=batch, options=options)
    chosen, refused = [], []
    for row in batch_rows(batch=batch, options=options):
        made = row_message(batch=batch, row=row, options=options)
        if made.spec is not None:
            chosen.append(made)
            if len(chosen) >= count:
                break
        elif len(refused) < count:
            refused.append(made)
    return chosen or refused


@dataclass
class SendPlan:
    """What a send would do, before it does it: how many rows get a message, and why the others would not."""

    messages: int
    by_channel: dict[str, int]
    not_sent: int
    summary: list[dict]
    already: int = 0  # rows whose message an earlier send queued: not sent again


def batch_send_plan(*, batch: LinkBatch, options: SendOptions) -> SendPlan:
    """Every row rendered as a send would, nothing queued: the count on the "Send to N holders" button and the
    rows that would be left out. (Suppressed addresses are known only to the outbox: they are listed after.)"""
    send_options_check(batch=batch, options=options)
    summary, by_channel, already = RowSummary(), {EMAIL: 0, SMS: 0}, 0
    before = delivery_selectors.queued_before(batch_key_prefix(batch.pk))
    for spec in _row_messages(batch=batch, options=options, not_sent=summary):
        if (spec.subject_key, spec.channel) in before:
            already += 1
        else:
            by_channel[spec.channel] += 1
    return SendPlan(
        messages=sum(by_channel.values()),
        by_channel=by_channel,
        not_sent=sum(entry["count"] for entry in summary.as_json()),
        summary=summary.as_json(),
        already=already,
    )


def _row_messages(*, batch: LinkBatch, options: SendOptions, not_sent: RowSummary) -> Iterator[delivery.MessageSpec]:
    """Each row's message as it will be sent; a row that gets none is added to `not_sent` with the reason. A row
    with the name and address of an earlier row is the same person listed twice (their links show one pass):
    they get one message. Two people at one address (a family's email) have other names: each gets theirs, and
    so does every row when no name is known (no name column)."""
    first_rows: dict[tuple[str, str, str], int] = {}
    for row in batch_rows(batch=batch, options=options):
        made = row_message(batch=batch, row=row, options=options)
        if made.reason:
            not_sent.add(SKIPPED, made.reason, row.number)
            continue
        spec = made.spec
        if row.name:
            first = first_rows.setdefault((spec.channel, made.address, row.name.casefold()), row.number)
            if first != row.number:
                not_sent.add(SKIPPED, f"The same name and address as row {first}: one message is enough.", row.number)
                continue
        yield spec


@dataclass
class TestSendOutcome:
    channel: str
    to: str
    sent: bool
    reason: str = ""


def batch_send_test(
    *, batch: LinkBatch, options: SendOptions, email: str = "", phone: str = ""
) -> list[TestSendOutcome]:
    """Send the first preview row's message to the manager's own address and/or phone, now, recorded nowhere in
    the batch's funnel: one per chosen channel the manager gave an address for."""
    send_options_check(batch=batch, options=options)
    rows = batch_send_preview(batch=batch, options=options, count=1)
    if not rows or rows[0].spec is None:
        raise SendError("No row of this batch gets a message to test with.")
    row = rows[0].row
    outcomes = []
    for channel, address in ((EMAIL, email), (SMS, phone)):
        if channel not in options.channels or not address.strip():
            continue
        # The row's message on this channel, whatever address the row has.
        one = SendOptions(**{**options.__dict__, "channels": (channel,)})
        forced = BatchRow(**{**row.__dict__, "email": row.email or address, "phone": row.phone or address})
        made = row_message(batch=batch, row=forced, options=one, to=address.strip())
        if made.reason:
            outcomes.append(TestSendOutcome(channel=channel, to=address, sent=False, reason=made.reason))
            continue
        # Marked where a mail client shows it first: the manager's inbox may hold many tests of many batches.
        subject = f"[Test] {made.spec.subject}" if made.spec.subject else ""
        spec = delivery.MessageSpec(
            **{**made.spec.__dict__, "subject_key": f"test:{made.spec.subject_key}", "subject": subject}
        )
        outcome = delivery.send_test(spec)
        outcomes.append(TestSendOutcome(channel=channel, to=address, sent=outcome.sent, reason=outcome.reason))
    if not outcomes:
        raise SendError("Give your own email address or phone number for the chosen channel.")
    return outcomes


@dataclass
class SendResult:
    batch: int
    queued: int
    already: int
    skipped: int
    summary: list[dict]

    def as_json(self) -> dict:
        return {"queued": self.queued, "skipped": self.skipped, "already": self.already, "batch": self.batch}


def batch_send(*, batch: LinkBatch, options: SendOptions, user=None, request=None) -> SendResult:
    """Record a send and queue its messages here and now (`manage.py send_links`): batch_send_request without
    the task, then batch_send_run in this process. Raises SendError when the send failed, with the reason."""
    send = batch_send_request(batch=batch, options=options, user=user, request=request, enqueue=False)
    send = batch_send_run(send_id=send.pk)
    if send.status != LinkBatchSend.Status.SUCCEEDED:
        raise SendError(send.error or "The messages were not queued.")
    return SendResult(
        batch=batch.pk, queued=send.queued, already=send.already, skipped=send.skipped, summary=send.skipped_summary
    )


def batch_send_request(
    *, batch: LinkBatch, options: SendOptions, user=None, request=None, enqueue: bool = True
) -> LinkBatchSend:
    """Record a send of the batch with its options ("Send to N holders"), for a worker to queue its messages
    (batch_send_run, after commit): the page answers at once, whatever the batch's size. Raises SendError for
    options that cannot be sent."""
    send_options_check(batch=batch, options=options)
    with transaction.atomic():
        # One send of a batch at a time (the batch row locked while it is looked for): a second one, made while
        # the first is still queueing, could not see the first's messages and would count them as its own.
        LinkBatch.objects.select_for_update().filter(pk=batch.pk).first()
        if _unfinished_sends(batch).exists():
            raise SendError("This batch's links are being sent already: wait until its messages are queued.")
        send = LinkBatchSend.objects.create(
            batch=batch,
            channels=",".join(options.channels),
            default_language=options.default_language,
            options=_options_as_json(options),
            by=user,
            by_name=user.get_username() if user is not None else "",
        )
        staff_action_record(
            actor=user,
            action="links.batch_send",
            target=batch,
            after={"channels": send.channels, "send": send.pk},
            request=request,
        )
        if enqueue:
            _send_task(send)
    return send


def batch_send_run(*, send_id: int) -> LinkBatchSend:
    """Queue the messages of a recorded send: one per row by the first chosen channel it has an address for;
    rows queued by an earlier send stay as they are, rows not sent are counted by reason on the send. One
    transaction: a worker that dies in it leaves nothing queued, and the recovery sweep hands the send to
    another (batch_sends_sweep); a copy of the task delivered twice finds the send taken."""
    send = LinkBatchSend.objects.select_related("batch__template").get(pk=send_id)
    beat = take(send, started_at=Coalesce(F("started_at"), Value(timezone.now())))
    if beat is None:
        send.refresh_from_db()
        return send
    if send.attempt > MAX_ATTEMPTS:
        beat.mine.update(
            status=LinkBatchSend.Status.FAILED,
            finished_at=timezone.now(),
            error=f"Not sent: a worker stopped {MAX_ATTEMPTS} times while queueing the messages. Send again.",
        )
    else:
        try:
            with beat.keep_beating(), transaction.atomic():
                counts = _queue_messages(batch=send.batch, options=_options_from_json(send.options))
                if not beat.mine.update(status=LinkBatchSend.Status.SUCCEEDED, finished_at=timezone.now(), **counts):
                    raise _TakenOver()  # the sweep gave the send to another worker: nothing of this one stays
        except _TakenOver:
            pass
        except SendError as exc:
            beat.mine.update(status=LinkBatchSend.Status.FAILED, finished_at=timezone.now(), error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a lost database, or a bug: a sentence for staff, the traceback logged
            error = failure_message(
                exc,
                what="while queueing the messages",
                subject=f"Send {send.pk} of link batch {send.batch_id}",
                logger=logger,
            )
            beat.mine.update(status=LinkBatchSend.Status.FAILED, finished_at=timezone.now(), error=error)
    send.refresh_from_db()
    return send


class _TakenOver(Exception):
    pass


def _queue_messages(*, batch: LinkBatch, options: SendOptions) -> dict:
    """Queue one message per row that gets one; the send's counts and the rows not sent, by reason."""
    send_options_check(batch=batch, options=options)
    summary = RowSummary()
    queued = delivery.queue_messages(_row_messages(batch=batch, options=options, not_sent=summary))
    for key, reason in queued.skipped:
        summary.add(SKIPPED, reason, row_of_key(key) or 0)
    skipped_summary = summary.as_json()
    return {
        "queued": queued.queued,
        "already": queued.already,
        "skipped": sum(entry["count"] for entry in skipped_summary),
        "skipped_summary": skipped_summary,
    }


def batch_sends_sweep() -> int:
    """A sweep (background.recovery): sends left queued because their task was lost, and sends whose worker
    stopped beating, are sent again."""
    sends = LinkBatchSend.objects.all()
    return resend_waiting(sends, _send_task) + requeue_stale(sends, _send_task)


def _send_task(send: LinkBatchSend) -> None:
    enqueue_after_commit(SEND_TASK, send.pk)


def _options_as_json(options: SendOptions) -> dict:
    return dataclasses.asdict(options)


def _options_from_json(data: dict) -> SendOptions:
    """The options a send was recorded with; SendOptions' defaults for what a send recorded before lacks."""
    options = dict(data)
    if "channels" in options:
        options["channels"] = tuple(options["channels"])
    if "columns" in options:
        options["columns"] = SendColumns(**options["columns"])
    if "messages" in options:
        options["messages"] = {language: LanguageMessage(**text) for language, text in options["messages"].items()}
    return SendOptions(**options)


def _unfinished_sends(batch: LinkBatch):
    return batch.sends.filter(status__in=[LinkBatchSend.Status.QUEUED, LinkBatchSend.Status.RUNNING])


def batch_send_cancel(*, batch: LinkBatch, user=None, request=None) -> int:
    """Stop the batch's messages not sent yet (a message being sent now finishes), and a send still queueing
    its messages: its worker finds the send no longer its own and queues nothing."""
    _unfinished_sends(batch).update(
        status=LinkBatchSend.Status.FAILED,
        finished_at=timezone.now(),
        error="Cancelled before its messages were queued.",
    )
    count = delivery.cancel(batch_key_prefix(batch.pk))
    staff_action_record(
        actor=user, action="links.batch_send_cancel", target=batch, after={"cancelled": count}, request=request
    )
    return count


def batch_send_again(*, batch: LinkBatch, user=None, request=None) -> int:
    """Queue the batch's failed messages again (failed ones only: sent, bounced and skipped stay as they are)."""
    count = delivery.retry_failed(batch_key_prefix(batch.pk))
    staff_action_record(
        actor=user, action="links.batch_send_again", target=batch, after={"queued": count}, request=request
    )
    return count


def batch_delivery_counts(*, batch: LinkBatch) -> dict[str, dict[str, int]]:
    return delivery_selectors.status_counts(batch_key_prefix(batch.pk))
