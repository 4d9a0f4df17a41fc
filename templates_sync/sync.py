"""The template sync service: mirror SmartPages pass templates into PassTemplate rows.

A full run pages through the API by what the server answers, upserts each page in one short
transaction, writes nothing for unchanged templates, and marks templates removed only after a run that
read every page cleanly — and only those that SmartPages confirms are gone (404). A failed run removes
nothing. One full run at a time: the RUNNING SyncRun row is the lock (see SyncRun).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import orjson
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from background.heap import existing_objects_out_of_gc
from background.recovery import Heartbeat

from .client import NotFound, SmartPagesClient, SmartPagesError, TemplatePage, smartpages_client
from .models import PassTemplate, SyncRun, is_input_field

logger = logging.getLogger(__name__)

# A template's row: the columns that come from its API object, in this order (see _mirror_row): its id,
# texts, flags, then the rest. The other columns are the page's: changed_at and first_seen_at are when it was
# read, removed_at is empty.
_TEMPLATE_ROW = (
    "id",
    "type",
    "name",
    "description",
    "status",
    "delivery_page_url",
    "disable_issue",
    "pos_distribution_only",
    "lock_input_fields",
    "deliver_by_kennitala",
    "use_email_domain_verification",
    "has_dynamic_barcode",
    "supports_google_wallet",
    "stamps",
    "pass_price",
    "kennitala_age_verification",
    "when_last_update_sent",
    "content_hash",
    "raw",  # the API object as JSON text (bytes), last: COPY takes it as it is, backslashes doubled
)
# Columns rewritten when a template's content changes (everything but id and first_seen_at).
_UPDATE_FIELDS = [*_TEMPLATE_ROW[1:], "changed_at", "removed_at"]


class InvalidTemplate(ValueError):
    """An upstream template object the mirror cannot store (no usable id, an unreadable price …)."""


class RunTakenOver(Exception):
    """This run stopped beating long enough for another worker to take it over: it must stop writing."""


# Integer columns hold 32-bit values on every database Django supports.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_PRICE_MAX = Decimal("999999999999.99")  # pass_price: 14 digits, 2 after the point
_TEXT_LIMITS = {f.name: f.max_length for f in PassTemplate._meta.fields if f.max_length}


def content_hash(item: dict) -> str:
    """A fingerprint of one API object, to skip unchanged templates without touching their rows."""
    return _fingerprint(item)[0]


def _fingerprint(item: dict) -> tuple[str, bytes]:
    """(content hash, the object as canonical JSON text).

    orjson with sorted keys is canonical and about eight times faster than json.dumps; hashing is most of
    an unchanged re-sync's own work. The same text is what `raw` stores, so a new template is serialised
    once.
    """
    dumped = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(dumped).hexdigest(), dumped


def _text(value, *, limit: int | None = None) -> str:
    """A string every text column accepts: NUL bytes (which PostgreSQL refuses) removed, cut to `limit`."""
    text = "" if value is None else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if limit is None else text[:limit]


def _without_nul(value):
    """`value` with NUL bytes removed from every string in it, keys included (PostgreSQL refuses them in text,
    and `raw` should say what the columns hold)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _fit(value, limit: int | None) -> str:
    """_text for a value known to hold no NUL byte: a string is only cut to `limit`."""
    return (value if type(value) is str else _text(value))[:limit]


def _clamped_int(value) -> int | None:
    """A number for an integer column: out-of-range values are held at the column's bounds (the exact
    value stays in `raw`). Raises ValueError/TypeError when it is not a number at all."""
    if value is None:
        return None
    try:
        number = int(value)
    except OverflowError:  # an infinite float
        number = _INT_MAX if value > 0 else _INT_MIN
    return max(_INT_MIN, min(_INT_MAX, number))


def _clamped_price(value) -> Decimal | None:
    """A price held within the column: a price too large to store is still a price, so the template
    stays refused for free links (see PassTemplate.issue_refusal_reason)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a price cannot be true or false")
    price = Decimal(str(value))
    if price.is_nan():
        raise ValueError("the price is not a number")
    return max(-_PRICE_MAX, min(_PRICE_MAX, price))


def _when(value) -> datetime | None:
    # Informational only: an unreadable date is left empty (the exact text stays in `raw`).
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_id(item) -> str | None:
    """The template id as the mirror stores it (an upper-case id upstream is the same template), or None."""
    try:
        raw = item["id"]
    except (TypeError, KeyError, IndexError):
        return None
    if type(raw) is str and _CANONICAL_UUID.fullmatch(raw):
        return raw  # as SmartPages writes ids: a fifth of the time uuid.UUID would take
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        return None


def _mirror_row(item, *, template_id: str | None, digest: str, dumped: bytes) -> tuple:
    """The template's row (see _TEMPLATE_ROW) for one API object, its canonical id (see _canonical_id) and
    its fingerprint.

    What does not fit a column is made to fit (NUL bytes removed, text cut to the column's length,
    numbers held at the column's bounds); an object the mirror cannot store at all raises InvalidTemplate.
    """
    if not isinstance(item, dict):
        raise InvalidTemplate(f"SmartPages sent a list item that is not a template object ({_text(item)[:40]!r}).")
    if template_id is None:
        raise InvalidTemplate(f"SmartPages sent a template without a usable id ({_text(item.get('id'))[:40]!r}).")
    if b"\\u0000" in dumped:  # a NUL byte somewhere: PostgreSQL refuses it in text
        item = _without_nul(item)
        dumped = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    numbers = []
    for key, read in (
        ("stamps", _clamped_int),
        ("kennitalaAgeVerification", _clamped_int),
        ("passPrice", _clamped_price),
    ):
        try:
            numbers.append(read(item.get(key)))
        except (TypeError, ValueError, InvalidOperation) as exc:
            shown = _text(item.get(key))[:40]
            raise InvalidTemplate(f"Template {template_id} has a {key} the mirror cannot read ({shown!r}).") from exc
    stamps, age, price = numbers
    get = item.get
    limits = _TEXT_LIMITS
    row = (  # in _TEMPLATE_ROW's order; NUL bytes are gone (see above)
        template_id,
        _fit(get("type"), limits["type"]),
        _fit(get("name"), limits["name"]),
        _fit(get("description"), None),
        _fit(get("status"), limits["status"]),
        _fit(get("deliveryPageUrl"), limits["delivery_page_url"]),
        bool(get("disableIssue")),
        bool(get("posDistributionOnly")),
        bool(get("lockInputFields")),
        bool(get("deliverByKennitala")),
        bool(get("useEmailDomainVerification")),
        bool(get("hasDynamicBarcode")),
        bool(get("supportsGoogleWallet")),
        stamps,
        price,
        age,
        _when(get("whenLastUpdateSent")),
        digest,
        dumped,
    )
    _check_input_fields(template_id, get("inputFields"))
    return row


def _check_input_fields(template_id: str, fields) -> None:
    """Refuse a template whose input fields the portal could not ask for (PassTemplate.input_fields reads
    them from `raw`)."""
    if not fields:
        return
    if not isinstance(fields, list):
        raise InvalidTemplate(f"Template {template_id} has input fields that are not a list.")
    if not all(map(is_input_field, fields)):
        raise InvalidTemplate(f"Template {template_id} has an input field without an identifier.")


def _template_dicts(templates: list[tuple], *, now: datetime, raw) -> list[dict]:
    """Template rows as column dicts, `raw` made by `raw(json_text)`, for the writers that take dicts."""
    return [
        {
            **dict(zip(_TEMPLATE_ROW[:-1], row[:-1], strict=True)),
            "raw": raw(row[-1]),
            "changed_at": now,
            "removed_at": None,
        }
        for row in templates
    ]


def _write_with_orm(templates: list[tuple], *, now: datetime) -> None:
    # One INSERT … ON CONFLICT for new and changed rows alike; first_seen_at stays as it was.
    PassTemplate.objects.bulk_create(
        [PassTemplate(first_seen_at=now, **row) for row in _template_dicts(templates, now=now, raw=orjson.loads)],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=_UPDATE_FIELDS,
    )


def _write_with_postgresql(
    templates: list[tuple], *, changed: list[str], now: datetime, copy_text: bytes | None = None
) -> None:
    """The same writes as _write_with_orm, in a transaction the caller opened.

    New templates are COPYed straight into the table (the bulk of a first sync: a third less of PostgreSQL's
    time than an INSERT … SELECT, which parses each page's JSON twice), from `copy_text` when it was made
    already (see _copy_text_of_new); should one exist after all, the COPY raises IntegrityError (see _write).
    Changed templates are upserted from one JSON document per page (json_to_recordset).
    """
    changed_ids = set(changed)
    if len(changed_ids) < len(templates):
        _copy_rows(copy_text or _copy_text_of_new(templates, changed=changed, now=now))
    if changed_ids:
        _upsert_with_postgresql([row for row in templates if row[0] in changed_ids], now=now)


def _copy_text_of_new(templates: list[tuple], *, changed: list[str], now: datetime) -> bytes:
    """The new templates (those not `changed`) in COPY's text format."""
    if changed:
        changed_ids = set(changed)
        templates = [row for row in templates if row[0] not in changed_ids]
    return _copy_template_text(templates, now=now)


def _copy_rows(copy_text: bytes) -> None:
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(_copy_statement()) as copy:
            copy.write(copy_text)


# COPY's text format built here (psycopg's write_row took twice the Python time). No value holds a NUL byte
# (see _mirror_row), so a row's values are joined with NUL, checked once for what COPY escapes, and the NULs
# made tabs; a row with a backslash, tab or line break in a text has its texts escaped one by one. Only text
# columns can hold those: ids, flags, numbers, dates and hashes cannot, and JSON escapes its own.
_NULL = "\\N"


def _copy_text(value: str) -> str:
    """A string in COPY's text format: backslash, tab and line breaks escaped."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_line(values: tuple[str, ...], texts: slice) -> str:
    """One row in COPY's text format, without its line break; `texts` says which values are texts."""
    line = "\x00".join(values)
    if "\\" in line or "\t" in line or "\n" in line or "\r" in line:
        values = list(values)
        values[texts] = map(_copy_text, values[texts])
        line = "\x00".join(values)
    return line.replace("\x00", "\t")


def _copy_template_text(templates: list[tuple], *, now: datetime) -> bytes:
    moment = now.isoformat()
    page = f"\t{moment}\t{_NULL}\t{moment}\t"  # changed_at, removed_at, first_seen_at; then raw
    texts = slice(1, 6)
    lines = []
    for row in templates:  # see _TEMPLATE_ROW
        values = (
            *row[:6],
            "t" if row[6] else "f",
            "t" if row[7] else "f",
            "t" if row[8] else "f",
            "t" if row[9] else "f",
            "t" if row[10] else "f",
            "t" if row[11] else "f",
            "t" if row[12] else "f",
            _NULL if row[13] is None else str(row[13]),
            _NULL if row[14] is None else str(row[14]),
            _NULL if row[15] is None else str(row[15]),
            _NULL if row[16] is None else row[16].isoformat(),
            row[17],
        )
        # JSON text holds no raw tab or line break (JSON escapes them): only its backslashes need doubling.
        lines += ((_copy_line(values, texts) + page).encode(), row[18].replace(b"\\", b"\\\\"), b"\n")
    return b"".join(lines)


@functools.cache
def _copy_statement() -> str:
    names = [*_TEMPLATE_ROW[:-1], "changed_at", "removed_at", "first_seen_at", "raw"]
    columns = ", ".join(PassTemplate._meta.get_field(name).column for name in names)
    return f"COPY {PassTemplate._meta.db_table} ({columns}) FROM STDIN"


def _upsert_with_postgresql(templates: list[tuple], *, now: datetime) -> None:
    """The page sent as one JSON document that PostgreSQL unpacks (json_to_recordset): building model
    instances and per-value parameters cost about ten times the fetch of the page itself."""
    with connection.cursor() as cursor:
        cursor.execute(_upsert_statement(), [now, _json_text(_template_dicts(templates, now=now, raw=orjson.Fragment))])


def _json_text(value) -> str:
    # orjson writes datetimes itself; Decimal prices go as strings, which PostgreSQL casts.
    return orjson.dumps(value, default=str).decode()


@functools.cache
def _upsert_statement() -> str:
    """INSERT … SELECT FROM json_to_recordset … ON CONFLICT, built from the model's own columns."""
    fields = [PassTemplate._meta.get_field(name) for name in ["id", *_UPDATE_FIELDS]]
    record = ", ".join(f"{f.column} {f.db_type(connection)}" for f in fields)
    names = ", ".join(f.column for f in fields)
    updates = ", ".join(f"{f.column} = EXCLUDED.{f.column}" for f in fields[1:])
    return (
        f"INSERT INTO {PassTemplate._meta.db_table} ({names}, first_seen_at) "
        f"SELECT {names}, %s FROM json_to_recordset(%s::json) AS t({record}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def _mirror_state(ids: list[str] | None = None) -> dict[str, tuple[str, bool]]:
    """id -> (content hash, removed?) for the mirror, or for `ids` only. One query for a whole run."""
    if connection.vendor == "postgresql":
        # Ids as text and the flag from the database, fetched in one go: under half the time of the ORM
        # making UUIDs and datetimes of each row (10,000 templates are ~1 MB of rows).
        where, params = ("", []) if ids is None else ("WHERE id = ANY(%s::uuid[])", [ids])
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id::text, content_hash, removed_at IS NOT NULL FROM {PassTemplate._meta.db_table} {where}",
                params,
            )
            return {template_id: (digest, removed) for template_id, digest, removed in cursor.fetchall()}
    templates = PassTemplate.objects.all() if ids is None else PassTemplate.objects.filter(id__in=ids)
    return {
        str(pk): (digest, removed_at is not None)
        for pk, digest, removed_at in templates.values_list("id", "content_hash", "removed_at")
    }


@dataclass
class PreparedPage:
    """What one page of API objects means for the mirror, worked out before anything is written."""

    templates: list[tuple] = field(default_factory=list)  # rows to insert or rewrite (see _TEMPLATE_ROW)
    changed: list[str] = field(default_factory=list)  # ids of the known templates among them (rewritten)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # why each template that cannot be stored was left out
    copy_text: bytes | None = None  # new templates' rows for COPY, if made ahead (PageWriter.make_ready)


def _prepare(items: list, *, known: dict[str, tuple[str, bool]], now: datetime) -> PreparedPage:
    """Compare API objects with `known` (see _mirror_state), which it keeps current; writes nothing.

    A template the mirror cannot store is left out with its reason, and the rest of the page goes on.
    """
    page = PreparedPage()
    for item in items:
        try:
            digest, dumped = _fingerprint(item)
            template_id = _canonical_id(item)
            state = known.get(template_id) if template_id else None
            if state == (digest, False):
                page.unchanged += 1
                continue
            row = _mirror_row(item, template_id=template_id, digest=digest, dumped=dumped)
        except (InvalidTemplate, orjson.JSONEncodeError) as exc:
            page.skipped.append(str(exc))
            continue
        known[template_id] = (digest, False)
        page.templates.append(row)
        if state is None:
            page.created += 1
        else:
            page.updated += 1
            page.changed.append(template_id)
    return page


def _write(page: PreparedPage, *, now: datetime) -> None:
    """One short transaction for a page's new and changed templates; nothing at all when there are none.

    On PostgreSQL, should a template the page takes for new exist after all (a single-template refresh
    stored it while the page was read), its COPY fails: that transaction is rolled back (a savepoint's, in a
    caller's transaction) and the whole page upserted instead.
    """
    if not page.templates:
        return
    if connection.vendor != "postgresql":
        with transaction.atomic():
            _write_with_orm(page.templates, now=now)
        return
    try:
        with transaction.atomic():
            _write_with_postgresql(page.templates, changed=page.changed, now=now, copy_text=page.copy_text)
    except IntegrityError:
        with transaction.atomic():
            _upsert_with_postgresql(page.templates, now=now)


def _store(items: list, *, known: dict[str, tuple[str, bool]], now: datetime) -> PreparedPage:
    """Upsert API objects against `known`; writes nothing for unchanged templates."""
    page = _prepare(items, known=known, now=now)
    _write(page, now=now)
    return page


PAGES_PER_WRITE = 4
# While the writer thread works, this process's threads hand the GIL over every 0.1 ms instead of every 5 ms:
# the writer waits on PostgreSQL several times a page, and each wait ends in a wait for the GIL, which the
# thread fetching and comparing pages would otherwise keep for up to the whole interval (bench/sync.py).
WRITER_SWITCH_INTERVAL = 0.0001


def _joined(pages: list[tuple[PreparedPage, datetime]]) -> tuple[PreparedPage, datetime]:
    """Prepared pages as one, dated when the first of them was read."""
    if len(pages) == 1:
        return pages[0]
    joined = PreparedPage()
    if all(page.copy_text is not None for page, _ in pages):
        joined.copy_text = b"".join(page.copy_text for page, _ in pages)
    for page, _ in pages:
        joined.templates += page.templates
        joined.changed += page.changed
        joined.created += page.created
        joined.updated += page.updated
        joined.unchanged += page.unchanged
        joined.skipped += page.skipped
    return joined, pages[0][1]


class PageWriter:
    """Writes prepared pages in order and counts what it wrote: page n is written while page n+1 is
    compared and page n+2 fetched.

    On PostgreSQL outside a transaction (a worker, the command) it writes from a thread on a database
    connection of its own, each page (or the few that queued up meanwhile) in a short transaction of its own;
    inside a caller's transaction, or on SQLite, it writes inline, on the caller's connection. A write error
    is raised to the consumer at its next `put` or at the end. `idle` is called every `idle_seconds` while
    the consumer waits on it.

    (A writer in a process of its own, forked, was tried: no GIL to wait for, but pickling every page to it
    cost more CPU than the waits did, and on two cores that CPU is what the run waits for.)
    """

    def __init__(self, *, idle=None, idle_seconds: float = 5.0):
        self.created = self.updated = self.unchanged = 0
        self.skipped: list[str] = []
        self._idle, self._idle_seconds = idle, idle_seconds
        self._error: BaseException | None = None
        self._thread = None
        self._switch_interval = None
        if self._writes_in_thread():
            self._pages: queue.Queue = queue.Queue(maxsize=PAGES_PER_WRITE)
            self._thread = threading.Thread(target=self._write_pages, daemon=True, name="template-page-writer")
            self._thread.start()
            # Put back in __exit__, whatever happens there; lowered only once there is a thread to put it back.
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_interval, WRITER_SWITCH_INTERVAL))

    @staticmethod
    def _writes_in_thread() -> bool:
        return connection.vendor == "postgresql" and not connection.in_atomic_block

    def put(self, page: PreparedPage, *, now: datetime) -> None:
        if self._thread is None:
            self._write(page, now)
            return
        self.make_ready(page, now=now)
        while True:
            self._raise_error()
            try:
                self._pages.put((page, now), timeout=self._idle_seconds)
                return
            except queue.Full:
                if self._idle is not None:
                    self._idle()

    def make_ready(self, page: PreparedPage, *, now: datetime) -> None:
        """Make what the writer thread will send (the COPY text) in the caller's thread, ahead of `put`: the
        writer thread then only sends it, and every statement it waits on costs it a wait for the GIL too."""
        if self._thread is not None and page.copy_text is None:
            page.copy_text = _copy_text_of_new(page.templates, changed=page.changed, now=now)

    def __enter__(self) -> PageWriter:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        """Wait until every page is written and raise the first write error; after an error of the
        consumer's own, only stop the thread."""
        if self._thread is not None:
            try:
                if self._thread.is_alive():
                    self._pages.put(None)
                while self._thread.is_alive():
                    self._thread.join(timeout=self._idle_seconds)
                    if self._thread.is_alive() and self._idle is not None and exc_type is None:
                        self._idle()  # may raise (the run taken over): the interval is put back all the same
            finally:
                self._thread = None
                sys.setswitchinterval(self._switch_interval)
        if exc_type is None:
            self._raise_error()

    def _write_pages(self) -> None:
        ended = False
        try:
            with connection.cursor() as cursor:
                # This connection is the writer's own. The mirror is rebuilt from SmartPages by the next run, so
                # a crash may lose its last commits: not waiting for each commit's WAL flush takes the commit
                # latency out of the run.
                cursor.execute("SET synchronous_commit TO OFF")
            while not ended:
                # Pages that queued up while the last write went on are written together, in one transaction
                # and one COPY: when the database is what the run waits for, fewer, larger writes.
                batch = [self._pages.get()]
                while batch[-1] is not None and len(batch) < PAGES_PER_WRITE:
                    try:
                        batch.append(self._pages.get_nowait())
                    except queue.Empty:
                        break
                ended = batch[-1] is None
                if pages := [item for item in batch if item is not None]:
                    self._write(*_joined(pages))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._error = exc
            while not ended and self._pages.get() is not None:  # let the consumer's put and close go through
                pass
        finally:
            connection.close()  # this thread's own connection

    def _write(self, page: PreparedPage, now: datetime) -> None:
        _write(page, now=now)
        self.created += page.created
        self.updated += page.updated
        self.unchanged += page.unchanged
        self.skipped.extend(page.skipped)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


# --- runs ---------------------------------------------------------------------------------------------
def sync_run_queue(*, trigger: str, triggered_by=None, kind: str = SyncRun.Kind.FULL, template_id=None) -> SyncRun:
    """Record a queued run, so that a page can follow it before a worker picks it up."""
    return SyncRun.objects.create(kind=kind, template_id=template_id, trigger=trigger, triggered_by=triggered_by)


def sync_run_skip(*, trigger: str, triggered_by=None) -> SyncRun:
    """Record a full run that was not started because another one is running."""
    now = timezone.now()
    return SyncRun.objects.create(
        trigger=trigger,
        triggered_by=triggered_by,
        status=SyncRun.Status.SKIPPED,
        warning=_SKIPPED_WARNING,
        started_at=now,
        finished_at=now,
    )


_SKIPPED_WARNING = "Skipped: another full sync was already running."
_DATABASE_LOST_ERROR = (
    "The connection to the database was lost during the run; what was written stays, and the next run writes the rest."
)
_ABANDONED_ERROR = "Abandoned: its worker stopped beating (no heartbeat for {seconds} s); taken over."
_COUNTS_AFRESH = {
    "pages": 0,
    "created_count": 0,
    "updated_count": 0,
    "unchanged": 0,
    "removed": 0,
    "total_pages": None,
    "total_items": None,
    "error": "",
    "warning": "",
}


def _stale_runs():
    """Running runs whose worker has not beaten for TEMPLATE_SYNC_STALE_SECONDS."""
    return SyncRun.objects.filter(status=SyncRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=SyncRun.stale_before()) | Q(heartbeat_at__isnull=True, started_at__lt=SyncRun.stale_before())
    )


def sync_runs_take_over_stale() -> list[SyncRun]:
    """Mark every stale running run failed (which releases the full-sync lock at once).

    Returns the full runs taken over, each only once even when two sweeps race: the caller queues a
    fresh run in their place.
    """
    taken = []
    for run in _stale_runs():
        seconds = settings.TEMPLATE_SYNC_STALE_SECONDS
        if SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=SyncRun.Status.FAILED, error=_ABANDONED_ERROR.format(seconds=seconds), finished_at=timezone.now()
        ):
            logger.warning("template sync run %s taken over: no heartbeat for %s s", run.pk, seconds)
            if run.kind == SyncRun.Kind.FULL:
                taken.append(run)
    return taken


def _claim_lock(run: SyncRun) -> bool:
    """Move `run` to RUNNING; False when it must not run now.

    A finished run (say, taken over while its task waited in the broker) is left as it is; a run that is
    RUNNING already is a task delivered again: left alone while its worker still beats, restarted with
    its counts afresh once it went stale. When another full run holds the lock, `run` is SKIPPED.
    """
    now = timezone.now()
    if run.status == SyncRun.Status.RUNNING:
        restarted = (
            SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING)
            .filter(Q(heartbeat_at__lt=SyncRun.stale_before()) | Q(heartbeat_at__isnull=True))
            .update(started_at=now, heartbeat_at=now, **_COUNTS_AFRESH)
        )
        if not restarted:
            return False
        for name, value in _COUNTS_AFRESH.items():
            setattr(run, name, value)
        run.started_at = run.heartbeat_at = now
        return True
    if run.status != SyncRun.Status.QUEUED:
        return False
    sync_runs_take_over_stale()  # a dead worker's run no longer holds the lock; this run replaces it
    run.started_at = run.heartbeat_at = now
    try:
        with transaction.atomic():
            claimed = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
                status=SyncRun.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        run.status, run.warning, run.finished_at = SyncRun.Status.SKIPPED, _SKIPPED_WARNING, timezone.now()
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
            status=run.status, warning=run.warning, started_at=now, finished_at=run.finished_at
        )
        return False
    if claimed:
        run.status = SyncRun.Status.RUNNING
    return bool(claimed)


class PagePrefetcher:
    """The template pages in order, each fetched and made ready (`ready(page)`) by a thread that stays a page
    ahead of the consumer.

    The network, the upstream's work and the comparing overlap with the database writes of the page before;
    the consumer only hands ready pages on, and beats while it waits. (Fetching in one thread and comparing
    in another cost more: the two took turns with the GIL for nothing, bench/sync.py.) Pages are followed by
    what the server says (its totalPages), and an empty page ends the list whatever it claims. A fetch error is
    raised to the consumer, in page order. While it waits for a slow page, the consumer's `idle` is called
    every `idle_seconds` (the run's heartbeat). Use it as a context manager so the thread always ends.
    """

    def __init__(self, client: SmartPagesClient, *, page_size: int, ready, idle=None, idle_seconds: float = 5.0):
        self._pages: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._idle, self._idle_seconds = idle, idle_seconds
        self._thread = threading.Thread(
            target=self._fetch, args=(client, page_size, ready), daemon=True, name="template-page-fetcher"
        )
        self._thread.start()

    def _fetch(self, client: SmartPagesClient, page_size: int, ready) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                page = client.list_templates(page=number, page_size=page_size)
                self._pages.put(ready(page))
                number += 1
                if number >= page.total_pages or not page.data:
                    break
            self._pages.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._pages.put(exc)

    def _next(self):
        while True:
            try:
                return self._pages.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._idle is not None:
                    self._idle()

    def __iter__(self) -> Iterator:
        while (page := self._next()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page

    def __enter__(self) -> PagePrefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a fetcher waiting on a full queue
            try:
                self._pages.get(timeout=0.05)
            except queue.Empty:
                pass


PROGRESS_EVERY_SECONDS = 0.5
_PROGRESS_FIELDS = [
    "created_count",
    "updated_count",
    "unchanged",
    "removed",
    "pages",
    "total_pages",
    "total_items",
    "warning",
]


class _Progress:
    """A running run's counts (as its PageWriter wrote them), saved with its heartbeat: at most every
    PROGRESS_EVERY_SECONDS while pages arrive, and every TEMPLATE_SYNC_HEARTBEAT_SECONDS whatever happens,
    from the thread doing the work — so a live worker beats even while a page is slow to come or to be
    written, and a dead one stops at once."""

    def __init__(self, run: SyncRun):
        self.run = run
        self.writer: PageWriter | None = None
        self._saved = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._saved >= PROGRESS_EVERY_SECONDS:  # for the progress bar
            self.beat()

    def count(self) -> None:
        """Take the counts and the skipped templates' reasons from the writer."""
        run, writer = self.run, self.writer
        if writer is None:
            return
        run.created_count, run.updated_count, run.unchanged = writer.created, writer.updated, writer.unchanged
        run.warning = _skipped_warning(writer.skipped) if writer.skipped else ""

    def beat(self) -> None:
        """Save the counts and the heartbeat; raise RunTakenOver when the run is no longer this worker's."""
        run = self.run
        self.count()
        values = {name: getattr(run, name) for name in _PROGRESS_FIELDS}
        values["total_pages"], values["total_items"] = _column_count(run.total_pages), _column_count(run.total_items)
        if not SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
            heartbeat_at=timezone.now(), **values
        ):
            raise RunTakenOver(f"Run {run.pk} was taken over by another worker.")
        self._saved = time.monotonic()


def _column_count(value: int | None) -> int | None:
    # A count upstream announced (totalItems 10**11 …) is shown held at what the column can store.
    return None if value is None else max(0, min(_INT_MAX, value))


_SKIPPED_SHOWN = 5


def _skipped_warning(reasons: list[str]) -> str:
    shown = "; ".join(reasons[:_SKIPPED_SHOWN]) + (
        f"; and {len(reasons) - _SKIPPED_SHOWN} more" if len(reasons) > _SKIPPED_SHOWN else ""
    )
    return f"{len(reasons)} template(s) SmartPages sent could not be stored and were skipped: {shown}"


def templates_sync_all(
    *,
    run: SyncRun | None = None,
    trigger: str = SyncRun.Trigger.COMMAND,
    triggered_by=None,
    client: SmartPagesClient | None = None,
) -> SyncRun:
    """Run a full sync (or record it as skipped when one is running). Returns the finished SyncRun."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by)
    if not _claim_lock(run):
        logger.info("template sync %s not started (%s): another run holds it or the lock", run.pk, run.status)
        return run
    return _run_to_outcome(run, lambda smartpages: _sync_every_page(run, client=smartpages), client=client)


def _sync_every_page(run: SyncRun, *, client: SmartPagesClient) -> None:
    seen: set[str] = set()  # canonical ids read: what _mark_removed compares the mirror with
    listed: set[str] = set()  # ids as listed: whether every announced item was read
    first_total, clean = None, True  # clean: every page announced the same total
    progress = _Progress(run)
    heartbeat = {"idle": progress.beat, "idle_seconds": settings.TEMPLATE_SYNC_HEARTBEAT_SECONDS}
    known = _mirror_state()

    def ready(page: TemplatePage) -> tuple[PreparedPage, datetime]:
        """Compare a page with the mirror (in the fetching thread)."""
        nonlocal first_total, clean
        if first_total is None:
            first_total = page.total_items
        elif page.total_items != first_total:
            clean = False
        fresh = []  # a template listed twice (on a shifted page, or spelled in upper case) is read once
        for item in page.data:
            if isinstance(item, dict) and "id" in item:
                listed.add(str(item["id"]))
            template_id = _canonical_id(item)
            if template_id is None or template_id not in seen:
                fresh.append(item)
            if template_id is not None:
                seen.add(template_id)
        run.pages += 1
        run.total_pages, run.total_items = page.total_pages, page.total_items
        now = timezone.now()
        prepared = _prepare(fresh, known=known, now=now)
        writer.make_ready(prepared, now=now)
        return prepared, now

    gone: list[str] = []
    try:
        with existing_objects_out_of_gc(), PageWriter(**heartbeat) as writer:
            progress.writer = writer
            with PagePrefetcher(client, page_size=settings.SMARTPAGES_PAGE_SIZE, ready=ready, **heartbeat) as pages:
                for prepared, now in pages:
                    writer.put(prepared, now=now)
                    progress.tick()
            if clean and len(listed) == first_total:
                gone = _confirmed_gone(progress, client=client, known=known, seen=seen)
        # Every page is written: only now, and only while the run is still this worker's, is anything removed.
        if gone:
            _mark_removed(progress, gone)
    finally:
        progress.count()  # what was written, also when the run failed part of the way
    if not clean or len(listed) != first_total:
        changed = (
            f"Upstream changed during the run ({len(listed)} templates read, {first_total} announced): "
            "no template was marked removed; the next run will settle it."
        )
        run.warning = "\n".join(filter(None, [run.warning, changed]))


def _run_to_outcome(run: SyncRun, work, *, client: SmartPagesClient | None) -> SyncRun:
    """Do `work(client)` for a running SyncRun and record how it ended; only known errors are shown."""
    try:
        with smartpages_client(client) as smartpages:
            work(smartpages)
        run.status = SyncRun.Status.SUCCEEDED
    except RunTakenOver:
        logger.warning("template sync run %s stopped: another worker took it over", run.pk)
        run.refresh_from_db()
        return run
    except (SmartPagesError, InvalidTemplate) as exc:
        run.status, run.error = SyncRun.Status.FAILED, str(exc)
        logger.warning("template sync run %s failed: %s", run.pk, exc)
    except (OperationalError, InterfaceError):  # the connection was lost or refused, not a fault of the code
        run.status, run.error = SyncRun.Status.FAILED, _DATABASE_LOST_ERROR
        logger.exception("template sync run %s failed: the database connection was lost", run.pk)
    except Exception:
        run.status, run.error = SyncRun.Status.FAILED, "Unexpected error; see the worker log."
        logger.exception("template sync run %s failed unexpectedly", run.pk)
    run.finished_at = timezone.now()
    _record_outcome(run)
    return run


def _record_outcome(run: SyncRun) -> None:
    """Write a finished run's status, which also releases the lock — and cannot fail for the data.

    The values are made to fit their columns; if the write fails anyway (a broken connection, say), a
    failed status alone is written on a fresh connection. Should even that fail, the run stops beating
    and is taken over as stale (TEMPLATE_SYNC_STALE_SECONDS).
    """
    values = {name: getattr(run, name) for name in _PROGRESS_FIELDS}
    values.update(
        total_pages=_column_count(run.total_pages),
        total_items=_column_count(run.total_items),
        status=run.status,
        error=_text(run.error),
        warning=_text(run.warning),
        finished_at=run.finished_at,
        heartbeat_at=run.finished_at,
    )
    running = SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING)
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()  # a connection the failure broke is replaced, not written on
    try:
        with transaction.atomic():
            running.update(**values)
        return
    except Exception:
        logger.exception("template sync run %s: recording its outcome failed; recording it as failed", run.pk)
    run.status = SyncRun.Status.FAILED
    run.error = _text(run.error) or "The outcome could not be recorded; see the worker log."
    try:
        if not connection.in_atomic_block:
            connection.close()  # the next query opens a fresh connection
        running.update(status=run.status, error=run.error, finished_at=run.finished_at)
    except Exception:
        logger.exception("template sync run %s: could not record a failure either; it will be taken over", run.pk)


def _confirmed_gone(progress: _Progress, *, client: SmartPagesClient, known: dict, seen: set[str]) -> list[str]:
    """The templates a clean run did not read that SmartPages confirms are gone (404); one it still has is
    written again.

    The list can shift under a run (an item deleted on an earlier page pushes a later item back onto
    a page already read), so absence from the pages alone is not proof. One call may take minutes (retries,
    Retry-After): a thread beats for the run meanwhile, so that the sweep does not take a live run over.
    """
    run = progress.run
    missing = [template_id for template_id, (_, removed) in known.items() if not removed and template_id not in seen]
    if not missing:
        return []
    gone = []
    heartbeat = Heartbeat(
        SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING),
        every=settings.TEMPLATE_SYNC_HEARTBEAT_SECONDS,
    )
    with heartbeat.keep_beating():
        for template_id in missing:
            progress.beat()
            try:
                item = client.get_template(template_id)
            except NotFound:
                gone.append(template_id)
                continue
            now = timezone.now()
            progress.writer.put(_prepare([item], known=known, now=now), now=now)
    return gone


def _mark_removed(progress: _Progress, gone: list[str]) -> None:
    """Mark `gone` removed, in one transaction with the run's heartbeat: a run taken over meanwhile raises
    RunTakenOver and removes nothing, and a sweep cannot take the run over until the marks are committed (its
    row stays locked, and its heartbeat is then new)."""
    with transaction.atomic():
        progress.beat()
        progress.run.removed += PassTemplate.objects.filter(pk__in=gone, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )


def template_refresh(
    *,
    template_id: str,
    triggered_by=None,
    trigger: str = SyncRun.Trigger.MANUAL,
    run: SyncRun | None = None,
    client: SmartPagesClient | None = None,
) -> SyncRun:
    """Refresh one template from GET /api/v1/pass-template/{id}; a 404 marks it removed."""
    run = run or sync_run_queue(
        trigger=trigger, triggered_by=triggered_by, kind=SyncRun.Kind.SINGLE, template_id=template_id
    )
    now = timezone.now()
    if not SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.QUEUED).update(
        status=SyncRun.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return run  # delivered again after it ran, or taken over: nothing to do
    run.status, run.started_at, run.heartbeat_at = SyncRun.Status.RUNNING, now, now
    return _run_to_outcome(
        run, lambda smartpages: _refresh_one(run, str(template_id), client=smartpages), client=client
    )


def _refresh_one(run: SyncRun, template_id: str, *, client: SmartPagesClient) -> None:
    run.pages = 1
    try:
        item = client.get_template(template_id)
    except NotFound:
        run.removed = PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )
        run.warning = "SmartPages no longer has this template."
        return
    if not isinstance(item, dict) or str(item.get("id")) != template_id:
        raise InvalidTemplate("SmartPages answered with a different template than the one asked for.")
    page = _store([item], known=_mirror_state([template_id]), now=timezone.now())
    if page.skipped:
        raise InvalidTemplate(page.skipped[0])
    run.created_count, run.updated_count, run.unchanged = page.created, page.updated, page.unchanged
