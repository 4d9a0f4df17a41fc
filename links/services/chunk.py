"""Making one chunk of a batch: its rows checked and linked, its output stored, its holders' first rows kept
for the assembly (a table of the batch's own)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Subquery, Sum
from django.utils import timezone

from background.heap import existing_objects_out_of_gc
from background.recovery import Heartbeat
from members.selectors import external_ids_in_use

from ..csv_files import (
    CsvDialect,
    ResultWriter,
    RowCount,
    count_rows,
    read_chunk,
    read_rows,
)
from ..models import LinkBatch, LinkChunk
from ..rows import Row, RowRules
from ..tokens import TokenTooLong
from .short_links import ShortLinkMaker
from .storage import remove_quietly, store
from .summary import RowSummary

logger = logging.getLogger(__name__)

LINK_COLUMN = "smartpass_link"
PASSKIT_LINK_COLUMN = "smartUrl"  # what mail merges written for PassKit's generator read
ERROR_COLUMN = "error"


@dataclass
class _Counts:
    rows_done: int = 0
    links: int = 0
    errors: int = 0
    warnings: int = 0
    duplicates: int = 0
    existing_members: int = 0

    def as_fields(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: Mapping[str, int]) -> None:
        for name, value in other.items():
            setattr(self, name, getattr(self, name) + value)


# Rows checked between two looks at the database for existing members: few queries, flat memory.
GROUP_ROWS = 2000
EXISTING_MEMBER_NOTE = "Warning: a member with this External ID already exists; the link shows that pass."


class _Stopped(Exception):
    """The batch was cancelled, failed or started again while a chunk was being made: the chunk stops."""


def _count_rows(binary: IO[bytes], dialect: CsvDialect, *, start: int, width: int) -> RowCount:
    return count_rows(
        binary,
        dialect,
        start=start,
        width=width,
        chunk_rows=settings.LINKS_CHUNK_ROWS,
        max_rows=settings.LINKS_MAX_ROWS,
    )


def _plan(binary: IO[bytes], dialect: CsvDialect) -> list[list[int]]:
    header, rows = read_rows(binary, dialect)
    return _count_rows(binary, dialect, start=rows.offset, width=len(header)).starts


def _line_end(batch: LinkBatch) -> str:
    """PassKit's format ends lines with LF, the portal's with CRLF (as Excel writes them)."""
    return "\n" if batch.output_format == LinkBatch.OutputFormat.PASSKIT else "\r\n"


def _dialect(batch: LinkBatch) -> CsvDialect:
    return CsvDialect(encoding=batch.encoding, delimiter=batch.delimiter, has_bom=batch.encoding == "utf-8-sig")


# --- making a chunk --------------------------------------------------------------------------------------------
PROGRESS_EVERY_SECONDS = 0.5


class _Progress:
    """The chunk's rows done, written for the progress bar at most every PROGRESS_EVERY_SECONDS; each write
    also finds out whether the chunk may go on, and raises _Stopped when the batch is no longer running
    (cancelled, failed: it stops within a second) or the chunk is no longer this worker's (the sweep took it
    over). Whether the worker is alive is the heartbeat's business (background.recovery), not this one's."""

    def __init__(self, chunk: LinkChunk, heartbeat: Heartbeat) -> None:
        self.chunk, self.heartbeat = chunk, heartbeat
        self.next_at = time.monotonic() + PROGRESS_EVERY_SECONDS

    def __call__(self, rows_done: int) -> None:
        if time.monotonic() < self.next_at:
            return
        chunk = self.chunk
        if not self.heartbeat() or not self.heartbeat.mine.update(rows_done=rows_done):
            raise _Stopped()
        if not _batch_rows_done_add_up(chunk.batch_id):
            raise _Stopped()
        self.next_at = time.monotonic() + PROGRESS_EVERY_SECONDS


def _batch_rows_done_add_up(batch_id: int) -> bool:
    """The running batch's progress: its chunks' rows done, added up. False when the batch is not running."""
    done = LinkChunk.objects.filter(batch_id=batch_id).values("batch_id").annotate(n=Sum("rows_done"))
    running = LinkBatch.objects.filter(pk=batch_id, status=LinkBatch.Status.RUNNING)
    return bool(running.update(rows_done=Subquery(done.values("n"))))


def _make_chunk(chunk: LinkChunk, heartbeat: Heartbeat) -> bool:
    """Check and link the chunk's rows, store its output; True when it was the batch's last chunk. The
    heartbeat (background.recovery.take) beats for the chunk and its batch from a thread while it works."""
    batch = chunk.batch
    dialect = _dialect(batch)
    made = _ChunkRows(RowRules(batch), dialect.delimiter, _line_end(batch))
    short_links = ShortLinkMaker.for_chunk(chunk, made.rules)
    if short_links is not None:
        made.make_link = short_links.link
    beat = _Progress(chunk, heartbeat)
    try:
        with (
            heartbeat.keep_beating(),
            existing_objects_out_of_gc(),
            default_storage.open(batch.input_file.name, "rb") as binary,
        ):
            rows = read_chunk(
                binary, dialect, width=len(batch.header), start=chunk.start, end=chunk.end, row_before=chunk.row_before
            )
            check_many = made.rules.check_many
            group: list[tuple[int, list[str]]] = []
            for item in rows:
                group.append(item)
                if len(group) >= GROUP_ROWS:
                    made.write(check_many(group))
                    group = []
                    beat(made.counts.rows_done)
            made.write(check_many(group))
    except _Stopped:
        _keep_made_rows(chunk, made)
        raise
    counts, summary, first_rows = made.counts, made.summary, made.first_rows
    output_name, errors_name = made.store(chunk)
    try:
        with transaction.atomic():
            if short_links is not None:
                short_links.store()  # before the batch row's lock: other chunks wait for that one
            # The batch row is locked while a chunk is marked done: chunks ending together count the rest
            # one after the other, so exactly one of them sees none left and assembles the batch.
            if not LinkBatch.objects.select_for_update().filter(pk=batch.pk, status=LinkBatch.Status.RUNNING).exists():
                raise _Stopped()
            if len(batch.plan) > 1:
                _RowKeys(batch.pk).add(first_rows)
            done = LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING).update(
                status=LinkChunk.Status.DONE,
                heartbeat_at=timezone.now(),
                rows_done=counts.rows_done,
                counts=counts.as_fields(),
                summary=summary.as_json(),
                output_file=output_name,
                errors_file=errors_name,
            )
            if not done:
                raise _Stopped()
            # A chunk made within PROGRESS_EVERY_SECONDS (50,000 rows take ~0.5 s) moves the bar here or never.
            _batch_rows_done_add_up(batch.pk)
            return not batch.chunks.exclude(status=LinkChunk.Status.DONE).exists()
    except _Stopped:
        if not _keep_made_rows(chunk, made, stored=(output_name, errors_name)):
            for name in (output_name, errors_name):
                default_storage.delete(name)
        raise
    except BaseException:
        for name in (output_name, errors_name):
            default_storage.delete(name)
        raise


def _keep_made_rows(chunk: LinkChunk, made: _ChunkRows, *, stored: tuple[str, str] | None = None) -> bool:
    """A chunk stopped by a cancel keeps the rows it made until then (the first `rows_done` rows of its
    slice) for the batch's partial result: its files are stored and it goes back to queued with them, so a
    re-run starts it afresh. True when kept; False when the batch was not cancelled (failed, started again)
    or the chunk is no longer this worker's (the sweep handed it on): then nothing is kept."""
    cancelled = LinkBatch.objects.filter(pk=chunk.batch_id, status=LinkBatch.Status.CANCELLED, output_file="")
    if not cancelled.exists():
        return False
    output_name, errors_name = stored or made.store(chunk)
    counts = made.counts
    with transaction.atomic():
        if len(chunk.batch.plan) > 1:
            _RowKeys(chunk.batch_id).add(made.first_rows)
        kept = LinkChunk.objects.filter(pk=chunk.pk, attempt=chunk.attempt, status=LinkChunk.Status.RUNNING).update(
            status=LinkChunk.Status.QUEUED,
            heartbeat_at=timezone.now(),
            rows_done=counts.rows_done,
            counts=counts.as_fields(),
            summary=made.summary.as_json(),
            output_file=output_name,
            errors_file=errors_name,
        )
    if not kept:
        for name in (output_name, errors_name):
            remove_quietly(name)
    return bool(kept)


class _ChunkRows:
    """What a chunk made so far: its output and error rows, counts, summary, and the first row of each holder."""

    def __init__(self, rules: RowRules, delimiter: str, line_end: str = "\r\n") -> None:
        self.rules = rules
        self.make_link = rules.link  # or a ShortLinkMaker's
        self.output, self.errors = _ChunkFile(delimiter, line_end), _ChunkFile(delimiter, line_end)
        self.first_rows: dict[str, tuple[int, bool]] = {}  # digest → (first row with it here, by External ID)
        self.counts, self.summary = _Counts(), RowSummary()

    def store(self, chunk: LinkChunk) -> tuple[str, str]:
        """Store the output and error rows made so far; the names they were stored under."""
        folder = chunk.batch.sibling_path(f"chunks/{chunk.index:05d}-{chunk.attempt}")
        output_name = self.output.store(folder + ".csv")
        try:
            errors_name = self.errors.store(folder + "-errors.csv")
        except BaseException:
            remove_quietly(output_name)
            raise
        return output_name, errors_name

    def write(self, group: list[Row]) -> None:
        rules, counts, summary, first_rows = self.rules, self.counts, self.summary, self.first_rows
        external_ids = [row.external_id for row in group if not row.error and row.external_id]
        in_use = external_ids_in_use(template=rules.template, external_ids=external_ids) if external_ids else ()
        make_link = self.make_link
        output: list[list[str]] = []
        errors: list[list[str]] = []
        for row in group:
            link = ""
            if not row.error:
                try:
                    link = make_link(row)
                except TokenTooLong as exc:
                    row.error = str(exc)
            if row.error:
                counts.errors += 1
                summary.add(RowSummary.ERROR, row.error, row.number)
                cells = row.cells + ["", row.error]
                output.append(cells)
                errors.append(cells)
                continue
            number, notes = row.number, row.notes
            first = first_rows.setdefault(row.digest, (number, bool(row.external_id)))[0]
            if first != number:
                counts.duplicates += 1
                notes.append(_duplicate_note(bool(row.external_id), first))
            if in_use and row.external_id in in_use:
                counts.existing_members += 1
                notes.append(EXISTING_MEMBER_NOTE)
            if notes:
                counts.warnings += 1
                for note in notes:
                    summary.add(RowSummary.WARNING, note, number)
                output.append(row.cells + [link, " ".join(notes)])
            else:
                output.append(row.cells + [link, ""])
        counts.rows_done += len(group)
        counts.links += len(group) - len(errors)
        self.output.write_rows(output)
        if errors:
            self.errors.write_rows(errors)


def _duplicate_note(by_external_id: bool, first: int) -> str:
    return f"Warning: the same {'External ID' if by_external_id else 'values'} as row {first}."


class _ChunkFile:
    """A chunk's output rows (no header, no BOM), kept in memory: a chunk is a few MB whatever the file's
    size, and no temporary file is ever left behind on the worker's disk. Rows are written as text a group
    at a time and encoded once per group: encoding row by row costs more than the rest of the writing."""

    def __init__(self, delimiter: str, line_end: str) -> None:
        self.buffer = io.BytesIO()
        self.writer = ResultWriter(io.StringIO(), delimiter=delimiter, header=None, line_end=line_end)

    def write_rows(self, rows: list[list[str]]) -> None:
        self.buffer.write(self.writer.rows_text(rows).encode("utf-8"))

    def store(self, name: str) -> str:
        self.buffer.seek(0)
        return store(name, File(self.buffer, name=name))


class _RowKeys:
    """The first row of each distinct holder in each chunk, in a table of the batch's own.

    Chunks run in any order on any host, so the first row with given values may sit in a chunk made after
    the row repeating it. Each chunk adds its first rows (one COPY, in the transaction that marks it done);
    the assembly asks for the keys that more than one chunk holds. A table per batch, unlogged and without
    an index, is the cheapest to fill and is dropped whole when the batch is assembled.
    """

    def __init__(self, batch_id: int) -> None:
        self.table = f"links_rowkeys_{int(batch_id)}"

    def create(self) -> None:
        postgres = connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            cursor.execute(
                f"CREATE {'UNLOGGED ' if postgres else ''}TABLE {self.table} "
                f"(key {'uuid' if postgres else 'text'} NOT NULL, first_row integer NOT NULL, by_id boolean NOT NULL)"
            )

    def drop(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")

    def add(self, first_rows: Mapping[str, tuple[int, bool]]) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                data = "".join([f"{key}\t{row}\t{'t' if by_id else 'f'}\n" for key, (row, by_id) in first_rows.items()])
                # psycopg's copy is not wrapped by Django: its errors become Django's here, like every query's.
                with (
                    connection.wrap_database_errors,
                    cursor.copy(f"COPY {self.table} (key, first_row, by_id) FROM STDIN") as copy,
                ):
                    copy.write(data)
            else:
                cursor.executemany(
                    f"INSERT INTO {self.table} (key, first_row, by_id) VALUES (%s, %s, %s)",
                    [(key, row, by_id) for key, (row, by_id) in first_rows.items()],
                )

    def repeated(self, *, part: int = 0, parts: int = 1) -> dict[int, tuple[int, bool]]:
        """Chunk-first rows whose holder came earlier in another chunk → (that earlier row, by External ID).
        With `parts` > 1, only those of the holders in `part` (a holder's key decides its part): the parts
        together give the whole answer (on PostgreSQL)."""
        of_part = ""
        if parts > 1:
            of_part = f"AND get_byte(uuid_send({{0}}.key), 15) % {int(parts)} = {int(part)}"
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL work_mem = '64MB'")  # a million keys hash in memory, not on disk
                # One hash aggregate: the parallel plan (partial aggregates, sorted and merged) took about 1.5×
                # as long for a million keys, and the chunks' processes want the other cores anyway.
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute(
                f"SELECT k.first_row, g.first_row, k.by_id FROM {self.table} k JOIN (SELECT key, MIN(first_row) AS "
                f"first_row FROM {self.table} t WHERE TRUE {of_part.format('t')} GROUP BY key HAVING COUNT(*) > 1) g "
                f"ON k.key = g.key WHERE k.first_row <> g.first_row {of_part.format('k')}"
            )
            return {row: (first, bool(by_id)) for row, first, by_id in cursor.fetchall()}
