"""Writing prepared pages of templates to the mirror: COPY for new templates and one JSON upsert for changed
ones on PostgreSQL, upserts of many rows a statement on SQLite, the ORM elsewhere; PageWriter writes from a thread of its
own while the next page is read (PostgreSQL), or gathers pages into fewer transactions (SQLite)."""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import sqlite3
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain

import orjson
from django.db import IntegrityError, connection, transaction

from ..models import PassTemplate
from .rows import _TEMPLATE_ROW, _UPDATE_FIELDS, InvalidTemplate, TemplateRow, _canonical_id, _fingerprint, _mirror_row

logger = logging.getLogger(__name__)


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


def _write_with_sqlite(templates: list[TemplateRow], *, now: datetime) -> None:
    """The same writes as _write_with_orm on SQLite, in a transaction the caller opened: INSERT … ON CONFLICT
    statements of many rows each, over plain tuples. The ORM's bulk_create made a model instance per template and
    prepared each of its 22 values through its field (and `raw` parsed, then serialised again with json):
    nine tenths of a first sync's time on SQLite (bench/sync.py). Values are adapted as Django's SQLite backend
    stores them: UUIDs as 32 hex digits, datetimes as naive UTC text, flags as 0/1, `raw` as the JSON text
    fetched (already canonical: see _fingerprint)."""
    ops = connection.ops
    moment = ops.adapt_datetimefield_value(now)
    price_field = PassTemplate._meta.get_field("pass_price")
    page = (moment, None, moment)  # changed_at, removed_at, first_seen_at
    rows = []
    for row in templates:
        values = list(row)
        values[0] = row.id.replace("-", "")
        if row.pass_price is not None:
            values[14] = price_field.get_db_prep_save(row.pass_price, connection)
        if row.when_last_update_sent is not None:
            values[16] = ops.adapt_datetimefield_value(row.when_last_update_sent)
        values[18] = row.raw.decode()
        rows.append((*values, *page))
    with connection.cursor() as cursor:
        # Hundreds of rows a statement: sqlite3 lets go of the GIL while it runs a statement and must win it
        # back after, and while the fetcher thread is busy (reading and comparing the next pages) each win can
        # wait for Python's switch interval (5 ms). Row by row, the writes of a first sync took ~1.7x their
        # own CPU time (bench/README.md, "The embedded default").
        per = max(1, min(SQLITE_ROWS_PER_STATEMENT, _sqlite_parameter_limit() // len(_SQLITE_COLUMNS)))
        whole = len(rows) - len(rows) % per
        if whole:
            cursor.executemany(
                _sqlite_upsert_statement(per),
                [tuple(chain.from_iterable(rows[start : start + per])) for start in range(0, whole, per)],
            )
        if whole < len(rows):
            cursor.execute(_sqlite_upsert_statement(len(rows) - whole), tuple(chain.from_iterable(rows[whole:])))


_SQLITE_COLUMNS = [*_TEMPLATE_ROW, "changed_at", "removed_at", "first_seen_at"]
SQLITE_ROWS_PER_STATEMENT = 500


def _sqlite_parameter_limit() -> int:
    """This SQLite's limit on a statement's parameters (999 before 3.32, 32766 since, as built)."""
    return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


@functools.lru_cache(maxsize=4)  # the full statement, and the last few lengths of a write's remainder
def _sqlite_upsert_statement(rows: int) -> str:
    """INSERT … ON CONFLICT for `rows` rows of _SQLITE_COLUMNS."""
    columns = [PassTemplate._meta.get_field(name).column for name in _SQLITE_COLUMNS]
    updates = ", ".join(
        f"{PassTemplate._meta.get_field(name).column} = excluded.{PassTemplate._meta.get_field(name).column}"
        for name in _UPDATE_FIELDS
    )
    one_row = f"({', '.join(['%s'] * len(columns))})"
    return (
        f"INSERT INTO {PassTemplate._meta.db_table} ({', '.join(columns)}) VALUES {', '.join([one_row] * rows)} "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
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


def _copy_template_text(templates: list[TemplateRow], *, now: datetime) -> bytes:
    moment = now.isoformat()
    page = f"\t{moment}\t{_NULL}\t{moment}\t"  # changed_at, removed_at, first_seen_at; then raw
    texts = slice(1, 6)  # type … delivery_page_url
    lines = []
    for row in templates:
        values = (
            *row[:6],  # id and the texts
            "t" if row.disable_issue else "f",
            "t" if row.pos_distribution_only else "f",
            "t" if row.lock_input_fields else "f",
            "t" if row.deliver_by_kennitala else "f",
            "t" if row.use_email_domain_verification else "f",
            "t" if row.has_dynamic_barcode else "f",
            "t" if row.supports_google_wallet else "f",
            _NULL if row.stamps is None else str(row.stamps),
            _NULL if row.pass_price is None else str(row.pass_price),
            _NULL if row.kennitala_age_verification is None else str(row.kennitala_age_verification),
            _NULL if row.when_last_update_sent is None else row.when_last_update_sent.isoformat(),
            row.content_hash,
        )
        # JSON text holds no raw tab or line break (JSON escapes them): only its backslashes need doubling.
        lines += ((_copy_line(values, texts) + page).encode(), row.raw.replace(b"\\", b"\\\\"), b"\n")
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
    if connection.vendor == "sqlite" and ids is None:
        # Likewise: the 32 hex digits SQLite holds, dashed by slicing (a tenth of uuid.UUID's time).
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, content_hash, removed_at IS NOT NULL FROM {PassTemplate._meta.db_table}")
            return {
                f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}": (digest, bool(removed))
                for h, digest, removed in cursor.fetchall()
            }
    templates = PassTemplate.objects.all() if ids is None else PassTemplate.objects.filter(id__in=ids)
    return {
        str(pk): (digest, removed_at is not None)
        for pk, digest, removed_at in templates.values_list("id", "content_hash", "removed_at")
    }


@dataclass
class PreparedPage:
    """What one page of API objects means for the mirror, worked out before anything is written."""

    templates: list[TemplateRow] = field(default_factory=list)  # rows to insert or rewrite
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
    if connection.vendor == "sqlite":
        with transaction.atomic():
            _write_with_sqlite(page.templates, now=now)
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
# On SQLite pages are written inline, gathered into transactions of this many templates at least: each commit
# waits for the disk (fsync), which was half of a first sync's time there when each page was its own (one
# writer at a time: 2,500 templates are ~0.2 s of other writers' wait, bench/sync.py).
SQLITE_ROWS_PER_WRITE = 2500
# While the writer thread works, this process's threads hand the GIL over every 0.1 ms instead of every 5 ms:
# the writer waits on PostgreSQL several times a page, and each wait ends in a wait for the GIL, which the
# thread fetching and comparing pages would otherwise keep for up to the whole interval (bench/sync.py).
WRITER_SWITCH_INTERVAL = 0.0001


@contextlib.contextmanager
def thread_switch_interval(seconds: float) -> Iterator[None]:
    """Inside the block, this process's threads hand the GIL over at least every `seconds` (never less often than
    they did); after it, as before, whatever happened inside."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


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
    inside a caller's transaction it writes inline, on the caller's connection. On SQLite it writes inline,
    SQLITE_ROWS_PER_WRITE templates (and at the end what is left) per transaction. A write error
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
        self._gathered: list[tuple[PreparedPage, datetime]] = []  # SQLite: pages not yet written
        self._gathered_rows = 0
        self._scope = contextlib.ExitStack()  # what __enter__ changed for the block, undone by __exit__

    @staticmethod
    def _writes_in_thread() -> bool:
        return connection.vendor == "postgresql" and not connection.in_atomic_block

    @staticmethod
    def _gathers() -> bool:
        return connection.vendor == "sqlite"

    def _write_gathered(self) -> None:
        """The pages gathered so far, in one transaction (SQLite)."""
        if self._gathered:
            pages, self._gathered, self._gathered_rows = self._gathered, [], 0
            self._write(*_joined(pages))

    def put(self, page: PreparedPage, *, now: datetime) -> None:
        if self._gathers():
            self._gathered.append((page, now))
            self._gathered_rows += len(page.templates)
            if self._gathered_rows >= SQLITE_ROWS_PER_WRITE:
                self._write_gathered()
            return
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
        if self._writes_in_thread():
            self._pages: queue.Queue = queue.Queue(maxsize=PAGES_PER_WRITE)
            self._thread = threading.Thread(target=self._write_pages, daemon=True, name="template-page-writer")
            self._scope.enter_context(thread_switch_interval(WRITER_SWITCH_INTERVAL))
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        """Wait until every page is written and raise the first write error; after an error of the
        consumer's own, only stop the thread (SQLite: drop the pages gathered, as a run taken over must)."""
        if exc_type is None:
            self._write_gathered()
        self._gathered = []
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
                self._scope.close()  # the switch interval as it was before the block
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
