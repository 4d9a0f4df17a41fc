"""Putting a batch's chunks together in input order: the output and errors files, counts and summary."""

from __future__ import annotations

import codecs
import csv
import errno
import io
import itertools
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from ..csv_files import (
    ResultWriter,
    read_chunk,
)
from ..models import LinkBatch, LinkChunk
from .chunk import (
    ERROR_COLUMN,
    EXISTING_MEMBER_NOTE,
    LINK_COLUMN,
    PASSKIT_LINK_COLUMN,
    _Counts,
    _dialect,
    _duplicate_note,
    _line_end,
    _plan,
    _RowKeys,
)
from .storage import store
from .summary import RowSummary

logger = logging.getLogger(__name__)

# --- assembly --------------------------------------------------------------------------------------------------
_DUPLICATE_NOTE_RE = re.compile(r"Warning: the same (External ID|values) as row (\d+)\.\Z")


def link_batch_finish(*, batch_id: int) -> None:
    """Put the chunks' output together in input order: the output and errors files, the counts, the summary.

    Runs once every chunk of a running batch is done (by the worker that made the last one, or sent again by
    the sweeper), and for a cancelled batch with the chunks made before the cancel: its partial output.
    """
    batch = LinkBatch.objects.select_related("template").get(pk=batch_id)
    if batch.status == LinkBatch.Status.RUNNING:
        if batch.chunks.exclude(status=LinkChunk.Status.DONE).exists():
            return
        finished_status, suffix = LinkBatch.Status.SUCCEEDED, ""
    elif batch.status == LinkBatch.Status.CANCELLED and not batch.output_file:
        if _chunks_still_stopping(batch):
            return  # the last of them to stop assembles (links.services.processing.link_chunk_process)
        finished_status, suffix = LinkBatch.Status.CANCELLED, "-partial"
    else:
        return
    # The query for holders repeated across chunks runs in parts, each on a connection of its own, while the
    # output is copied (below): not inside an outer transaction, whose uncommitted rows another connection
    # cannot see.
    query_beside = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic(), ThreadPoolExecutor(REPEATS_QUERY_PARTS) as beside:
        # One assembly at a time: the batch row stays locked until it is written, so an assembly sent again
        # by the sweeper while this one runs (or a cancel) waits or gives up, and never writes the same
        # files at the same time. A worker killed here releases the lock with its connection.
        mine = LinkBatch.objects.select_for_update(skip_locked=True).filter(
            pk=batch.pk, status=batch.status, output_file=""
        )
        if not mine.exists():
            return
        chunks = list(batch.chunks.order_by("index"))
        if finished_status == LinkBatch.Status.CANCELLED:
            if batch.started_at is None or (batch.queued_at and batch.started_at < batch.queued_at):
                chunks = []  # cancelled before this run started: the chunks left are an earlier run's
            chunks = _slices(batch, chunks)
        if len(batch.plan) <= 1 or not any(chunk.output_file for chunk in chunks):
            repeated = _Repeated([_answered({})])
        elif query_beside:
            repeated = _Repeated(
                [
                    beside.submit(_repeated_on_own_connection, batch.pk, part, REPEATS_QUERY_PARTS)
                    for part in range(REPEATS_QUERY_PARTS)
                ]
            )
        else:
            repeated = _Repeated([_answered(_RowKeys(batch.pk).repeated())])
        output_path = batch.sibling_path(f"output{suffix}.csv")
        assembly = _Assembly(batch, chunks, repeated)
        # PassKit's format has its error column only when some row has something in it.
        assembly.drop_error = (
            batch.output_format == LinkBatch.OutputFormat.PASSKIT
            and finished_status == LinkBatch.Status.SUCCEEDED  # a partial file's rows not made say why there
            and not assembly.counts.errors
            and not assembly.counts.warnings
            and not repeated.result()
        )
        header = _header_bytes(batch, with_error=not assembly.drop_error)
        work_folder = batch.sibling_path("chunks")
        output_name = _store_stream(assembly.output(header), output_path, work_folder=work_folder)
        if assembly.copied_unchecked_repeats():  # copied before the query answered, and it needed changes
            default_storage.delete(output_name)
            assembly = _Assembly(batch, chunks, repeated)
            output_name = _store_stream(assembly.output(header), output_path, work_folder=work_folder)
        counts, summary = assembly.counts, assembly.summary
        errors_header = _header_bytes(batch, with_error=True)
        errors_name = _store_stream(
            assembly.errors(errors_header), batch.sibling_path(f"errors{suffix}.csv"), work_folder=work_folder
        )
        totals = {"rows_total": counts.rows_done} if finished_status == LinkBatch.Status.SUCCEEDED else {}
        finished = LinkBatch.objects.filter(
            pk=batch.pk, attempt=batch.attempt, status=batch.status, output_file=""
        ).update(
            status=finished_status,
            output_file=output_name,
            errors_file=errors_name,
            summary=summary.as_json(),
            finished_at=timezone.now(),
            **totals,
            **counts.as_fields(),
        )
    if not finished:  # cancelled, or assembled by another worker, in the meantime
        for name in (output_name, errors_name):
            default_storage.delete(name)
    elif finished_status == LinkBatch.Status.SUCCEEDED:
        _discard_chunks(batch)
    else:
        _RowKeys(batch.pk).drop()  # a cancelled batch keeps its chunks (where it stopped) until its re-run


NOT_MADE = "not made: the upload was cancelled"


def _chunks_still_stopping(batch: LinkBatch) -> bool:
    """Whether a chunk of the cancelled batch is still running (it stops at its next beat and keeps what it
    made); a chunk whose worker stopped beating is not waited for."""
    alive = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)
    return batch.chunks.filter(status=LinkChunk.Status.RUNNING, heartbeat_at__gte=alive).exists()


def _slices(batch: LinkBatch, chunks: list[LinkChunk]) -> list[LinkChunk]:
    """Every slice of a cancelled batch's input in order: its chunk row where one was made, an unsaved
    LinkChunk (nothing made) for a slice whose chunk never existed (cancelled while queued)."""
    plan = batch.plan
    if not plan:  # uploaded before chunks existed, cancelled while queued: the whole file is one slice
        with default_storage.open(batch.input_file.name, "rb") as binary:
            plan = _plan(binary, _dialect(batch))[:1]
    by_index = {chunk.index: chunk for chunk in chunks}
    ends = [start for start, _ in plan[1:]] + [None]
    return [
        by_index.get(index) or LinkChunk(batch=batch, index=index, start=start, end=end, row_before=row_before)
        for index, ((start, row_before), end) in enumerate(zip(plan, ends, strict=True))
    ]


def link_batch_write_output(*, batch: LinkBatch, path: str | os.PathLike) -> None:
    """Write the batch's result file to a local path (`manage.py generate_links`): a storage on this host's
    disk is copied by the kernel, any other is streamed."""
    try:
        stored = default_storage.path(batch.output_file.name)
    except NotImplementedError:  # not on this host's disk
        with default_storage.open(batch.output_file.name, "rb") as result, open(path, "wb") as out:
            shutil.copyfileobj(result, out, _BLOCK_BYTES)
    else:
        shutil.copyfile(stored, path)


def _header_bytes(batch: LinkBatch, *, with_error: bool) -> bytes:
    # UTF-8 with a BOM whatever the input was: Excel then shows Icelandic letters, and every other reader
    # skips the BOM. PassKit's format: UTF-8 without BOM, its link column name, LF.
    text = io.StringIO()
    passkit = batch.output_format == LinkBatch.OutputFormat.PASSKIT
    added = [PASSKIT_LINK_COLUMN if passkit else LINK_COLUMN] + ([ERROR_COLUMN] if with_error else [])
    ResultWriter(text, delimiter=batch.delimiter, header=batch.header + added, line_end=_line_end(batch))
    return (b"" if passkit else codecs.BOM_UTF8) + text.getvalue().encode("utf-8")


# The query for holders repeated across chunks is the longest part of a large batch's serial end (~0.85 s for a
# million keys in one hash aggregate, while the copy of the chunks' files takes ~0.4 s): it runs in parts, each
# on a connection of its own and so on a core of its own, each hashing the keys of its part only (half the keys:
# ~0.23 s, as a smaller hash table also stays in the caches).
REPEATS_QUERY_PARTS = 2


def _repeated_on_own_connection(batch_id: int, part: int, parts: int) -> dict[int, tuple[int, bool]]:
    try:
        with transaction.atomic():
            return _RowKeys(batch_id).repeated(part=part, parts=parts)
    finally:
        connection.close()  # this thread's connection


def _answered(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class _Repeated:
    """The answer to the repeats query, asked in parts: done when every part is."""

    def __init__(self, parts: list[Future]) -> None:
        self.parts = parts
        self.merged: dict[int, tuple[int, bool]] | None = None

    def done(self) -> bool:
        return all(part.done() for part in self.parts)

    def result(self) -> dict[int, tuple[int, bool]]:
        if self.merged is None:
            merged: dict[int, tuple[int, bool]] = {}
            for part in self.parts:
                merged.update(part.result())
            self.merged = merged
        return self.merged


class _Assembly:
    """The chunks' files one after the other; a chunk holding the first row of a holder who came earlier
    in another chunk is read row by row, and those rows get their "the same values as row N" right.

    Which rows those are comes from a query that may still be running when the copy starts: chunks are
    copied as they are until it answers, and copied_unchecked_repeats() then says whether one of them
    needed changes after all (a file with holders repeated across chunks): the caller copies it again.

    A cancelled batch's chunks are every slice of its input: one made whole, one stopped part of the way
    (its first rows_done rows made), one never made. The rows not made come back from the input, in their
    place, with an empty link and the reason (NOT_MADE)."""

    def __init__(self, batch: LinkBatch, chunks: list[LinkChunk], repeated: _Repeated) -> None:
        self.batch, self.chunks, self.later = batch, chunks, repeated
        self.repeated: dict[int, tuple[int, bool]] | None = None
        self.counts, self.summary = _Counts(), RowSummary()
        for chunk in chunks:
            if chunk.output_file:
                self.counts.add(chunk.counts)
                self.summary.merge(chunk.summary)
        self.unchecked: list[tuple[int, int | None]] = []  # (row before, last row) of chunks copied unchecked
        self.drop_error = False  # PassKit's format without a row that has an error or warning

    def output(self, header: bytes) -> Iterator[bytes]:
        yield header
        if self.drop_error:
            for chunk in self.chunks:
                yield from self._without_error(chunk)
            return
        chunks = self.chunks
        starts = [chunk.row_before for chunk in chunks[1:]] + [None]
        for chunk, end in zip(chunks, starts, strict=True):
            if not chunk.output_file:
                yield from self._not_made(chunk, made=0)
                continue
            if self.repeated is None and self.later.done():
                self.repeated = self.later.result()
            if self.repeated is None:
                self.unchecked.append((chunk.row_before, end))
            elif any(chunk.row_before < row and (end is None or row <= end) for row in self.repeated):
                yield from self._rewritten(chunk)
                continue
            yield _Stored(chunk.output_file)
            if chunk.status != LinkChunk.Status.DONE:
                yield from self._not_made(chunk, made=chunk.rows_done)

    def copied_unchecked_repeats(self) -> bool:
        if self.repeated is None:
            self.repeated = self.later.result()
        return any(
            before < row and (end is None or row <= end) for before, end in self.unchecked for row in self.repeated
        )

    def errors(self, header: bytes) -> Iterator[bytes]:
        yield header
        for chunk in self.chunks:
            if chunk.errors_file:
                yield _Stored(chunk.errors_file)

    def _input_rows(self, chunk: LinkChunk, binary) -> Iterator[tuple[int, list[str]]]:
        batch = self.batch
        return read_chunk(
            binary,
            _dialect(batch),
            width=len(batch.header),
            start=chunk.start,
            end=chunk.end,
            row_before=chunk.row_before,
        )

    def _not_made(self, chunk: LinkChunk, *, made: int) -> Iterator[bytes]:
        """The chunk's input rows after its first `made`, each with an empty link and the reason."""
        batch = self.batch
        writer = ResultWriter(io.StringIO(), delimiter=batch.delimiter, header=None, line_end=_line_end(batch))
        with default_storage.open(batch.input_file.name, "rb") as binary:
            rows = itertools.islice(self._input_rows(chunk, binary), made, None)
            while group := [cells + ["", NOT_MADE] for _, cells in itertools.islice(rows, _NOT_MADE_GROUP)]:
                yield writer.rows_text(group).encode("utf-8")

    def _without_error(self, chunk: LinkChunk) -> Iterator[bytes]:
        """A chunk's rows without their (empty) last cell. Without a quotation mark in the chunk, no cell
        holds a line break and every line ends in a delimiter before LF: that delimiter goes."""
        delimiter = self.batch.delimiter
        with default_storage.open(chunk.output_file, "rb") as stored:
            data = stored.read()  # a chunk is a few MB
        if b'"' not in data:
            yield data.replace(delimiter.encode() + b"\n", b"\n")
            return
        text = io.StringIO()
        writer = csv.writer(text, delimiter=delimiter, lineterminator="\n")
        for cells in csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=delimiter):
            writer.writerow(cells[:-1])
        yield text.getvalue().encode("utf-8")

    def _rewritten(self, chunk: LinkChunk) -> Iterator[bytes]:
        batch = self.batch
        text = io.StringIO()
        writer = csv.writer(text, delimiter=batch.delimiter, lineterminator=_line_end(batch))
        with (
            default_storage.open(batch.input_file.name, "rb") as binary,
            default_storage.open(chunk.output_file, "rb") as stored,
        ):
            rows = self._input_rows(chunk, binary)
            if chunk.status != LinkChunk.Status.DONE:  # stopped by a cancel: its first rows_done rows were made
                rows = itertools.islice(rows, chunk.rows_done)
            # Every input row gave one output row, in order: the input says which row number each one is.
            records = csv.reader(io.TextIOWrapper(stored, encoding="utf-8", newline=""), delimiter=batch.delimiter)
            for (number, _), cells in zip(rows, records, strict=True):
                if cells[-2]:  # a link: only those rows carry duplicate notes
                    cells[-1] = self._notes(number, cells[-1])
                writer.writerow(cells)
                if text.tell() > _BLOCK_BYTES:
                    yield text.getvalue().encode("utf-8")
                    text.seek(0)
                    text.truncate()
        yield text.getvalue().encode("utf-8")
        if chunk.status != LinkChunk.Status.DONE:
            yield from self._not_made(chunk, made=chunk.rows_done)

    def _notes(self, number: int, notes: str) -> str:
        existing = notes.endswith(EXISTING_MEMBER_NOTE)
        body = notes.removesuffix(EXISTING_MEMBER_NOTE).rstrip() if existing else notes
        if number in self.repeated:  # the first in its chunk, not in the file
            first, by_id = self.repeated[number]
            note = _duplicate_note(by_id, first)
            self.counts.duplicates += 1
            self.counts.warnings += not notes
            self.summary.add(RowSummary.WARNING, note, number)
        else:  # a repeat within its chunk of a row that is itself a repeat: the earliest row is named
            match = _DUPLICATE_NOTE_RE.search(body)
            if not match or int(match[2]) not in self.repeated:
                return notes
            body = body[: match.start()].rstrip()
            note = _duplicate_note(match[1] == "External ID", self.repeated[int(match[2])][0])
            self.summary.replace_example(RowSummary.WARNING, number, note)
        return " ".join(part for part in (body, note, EXISTING_MEMBER_NOTE if existing else "") if part)


class _Stored(str):
    """A stored file (a chunk's output) that goes into the assembled file whole, byte for byte."""


def _blocks(pieces: Iterator[bytes | _Stored]) -> Iterator[bytes]:
    for piece in pieces:
        if isinstance(piece, _Stored):
            with default_storage.open(piece, "rb") as stored:
                while block := stored.read(_BLOCK_BYTES):
                    yield block
        else:
            yield piece


_BLOCK_BYTES = 1024 * 1024
_NOT_MADE_GROUP = 2000  # rows not made, written as text a group at a time


class _Pieces(io.RawIOBase):
    """A readable file over an iterator of bytes: a storage not on this host's disk saves the assembled output
    as it is produced, without a temporary file and without holding it in memory."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces, self.pending = pieces, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.pending = memoryview(piece)  # a view: handing out a piece in parts copies each byte once
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def _store_stream(pieces: Iterator[bytes | _Stored], name: str, *, work_folder: str) -> str:
    """Store the bytes under `name`, replacing what an earlier run left there.

    A storage on this host's disk gets the file put together in `work_folder` (the batch's chunks folder, which
    every run and every finished batch empties, so a worker killed here leaves nothing for long), each whole
    chunk file copied by the kernel (copy_file_range: a million rows' ~190 MB took ~0.66 s of the batch's serial
    end through Python's writes, 0.36–0.49 s so), then handed to storage, which moves it into place (a rename).
    Any other storage is streamed to, without a temporary file."""
    if default_storage.exists(name):
        default_storage.delete(name)
    try:
        folder = default_storage.path(work_folder)
    except NotImplementedError:  # not on this host's disk
        content = File(io.BufferedReader(_Pieces(_blocks(pieces)), _BLOCK_BYTES), name=name)
        content.DEFAULT_CHUNK_SIZE = _BLOCK_BYTES  # storage copies it in blocks of a MB rather than 64 KB
        return store(name, content)
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix="assembling-", suffix=".csv", delete=False) as out:
        try:
            for piece in pieces:
                if isinstance(piece, _Stored):
                    with open(default_storage.path(piece), "rb") as stored:
                        _append_whole(stored, out)
                else:
                    out.write(piece)  # buffered: every byte is written, or an error says why (a full disk)
            out.flush()
        except BaseException:
            out.close()
            os.unlink(out.name)
            raise
    try:
        with open(out.name, "rb") as assembled:
            return store(name, _AssembledFile(assembled, name=name, path=out.name))
    finally:
        if os.path.exists(out.name):  # copied, not moved (a storage of its own ways), or not stored at all
            os.unlink(out.name)


class _AssembledFile(File):
    """A file put together on the storage's own disk: FileSystemStorage moves it into place (`temporary_file_path`:
    a rename, no copy); a storage that reads it instead reads the open file."""

    def __init__(self, file, *, name: str, path: str) -> None:
        super().__init__(file, name=name)
        self.path = path

    def temporary_file_path(self) -> str:
        return self.path


def _append_whole(source, target) -> None:
    """All of `source` appended to `target` (both files on this host's disk): by the kernel where it can
    (copy_file_range: Linux), else read and written here."""
    target.flush()  # what was written before goes first
    size, copied = os.fstat(source.fileno()).st_size, 0
    if hasattr(os, "copy_file_range"):
        try:
            while copied < size and (done := os.copy_file_range(source.fileno(), target.fileno(), size - copied)):
                copied += done
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise  # a full disk, an I/O error: the caller removes the part-written file
    target.seek(0, os.SEEK_END)  # the kernel wrote past the buffered writer's idea of its position
    if copied < size:
        source.seek(copied)
        shutil.copyfileobj(source, target, _BLOCK_BYTES)


# copy_file_range cannot copy between these two files (another file system on an older kernel, a file system
# without it): the rest is copied in Python.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def _discard_chunks(batch: LinkBatch) -> None:
    """Remove what the chunks of an earlier run or of the finished batch left: their rows, keys and files,
    including a file a worker stored just before it was killed (it is in the folder, in no chunk row)."""
    folder = batch.sibling_path("chunks")
    try:
        _, names = default_storage.listdir(folder)
    except FileNotFoundError:
        names = []
    for name in names:
        default_storage.delete(f"{folder}/{name}")
    batch.chunks.all().delete()
    _RowKeys(batch.pk).drop()
