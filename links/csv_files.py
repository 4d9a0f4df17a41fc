"""Reading campaign CSVs and writing result CSVs, one row at a time.

Pure Python (no Django): the upload form, the Celery task and the
``generate_links`` command all use it.  Memory stays constant whatever the
file size: rows are read and written as a stream.

Rules, so that results are predictable:

* Encoding: given by the uploader, or detected: a UTF-8 BOM means
  ``utf-8-sig``; text that decodes as UTF-8 is UTF-8; anything else is read
  as whichever of Windows-1252, Mac Roman, Mac Icelandic and cp850 (DOS)
  gives the most Icelandic letters and the fewest stray symbols (Mac Excel
  and old DOS tools save the last three).  UTF-16 (a BOM, or chosen) is
  converted to UTF-8 by ``utf16_to_utf8`` before anything else reads it:
  lines are split as bytes.  A row further down that is not valid in the
  chosen encoding raises CsvFormatError naming that row, rather than
  silently turning letters into replacement characters.
* Delimiter: comma, semicolon or tab; given, else named by Excel's
  ``sep=X`` first line (which is then no row), else detected.
* A Ctrl-Z at the very end (DOS's end-of-file mark) is no row:
  ``without_end_of_file_mark`` drops it before the file is stored.
* The first record is the header.  Header cells are stripped; empty cells at
  the end of the header are dropped (Excel writes them for formatted but
  empty columns); any other empty or repeated (case-insensitively) name is
  an error.
* Row numbers count every record after the header, so row ``n`` is the
  ``n``-th data record and the spreadsheet row ``n + 1``, even across quoted
  newlines.
* Blank lines (a line with no cells at all, such as the newline at the end
  of a file) are not rows: they are skipped, their number is still used up,
  and they do not count toward ``max_rows``.  Any other record is a row and
  is yielded, even when every cell is empty or whitespace (``,,`` or
  `` , ``): a result file must give back every row a spreadsheet shows, so
  the caller echoes it with an error rather than dropping it.
* Short rows are padded with ``''`` to the header's width.  Empty cells past
  the header's width are dropped; a row that is still longer than the header
  keeps its extra cells, and the caller reports it as a row error.

One module of about 700 lines because reading and writing share these rules (the encodings, the dialect, the
formula guard) and must stay pure Python for the worker's hot loop; its sections follow the order above.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import IO, Any

# The formula guard is shared with the member export; members.csv_cells is pure Python too.
from members.csv_cells import safe_cell, safe_cells

__all__ = [
    "CsvFormatError",
    "CsvDialect",
    "DELIMITERS",
    "ENCODINGS",
    "encoding_name",
    "is_utf16",
    "utf16_to_utf8",
    "without_end_of_file_mark",
    "sniff",
    "read_rows",
    "read_chunk",
    "count_rows",
    "RowCount",
    "is_empty",
    "Rows",
    "check_size",
    "safe_cell",
    "ResultWriter",
]

DELIMITERS = (",", ";", "\t")
# Sniffer's regexes scale badly with size and a few dozen lines are enough.
_SNIFF_SAMPLE_CHARS = 16 * 1024
# How much of a file is read at a time while splitting it into lines.
_BLOCK_BYTES = 1024 * 1024
# Control characters that never occur in a text CSV (tab, CR, LF excluded).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f]")
_NOT_TEXT = "This file does not look like a CSV text file."
# Bytes the codec could not decode come through as lone surrogates
# (errors="surrogateescape"); valid text never contains them.
_UNDECODABLE_RE = re.compile("[\udc80-\udcff]")


class CsvFormatError(ValueError):
    """A file-level problem; the message is a sentence a person understands
    (shown on the upload form)."""


@dataclass(frozen=True)
class CsvDialect:
    encoding: str  # a key of ENCODINGS other than "utf-16" (converted to UTF-8 first)
    delimiter: str  # "," ";" "\t"
    has_bom: bool


# The encodings an upload may be read in, as Python names them, with the names staff know them by.
ENCODINGS = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 with BOM",
    "cp1252": "Windows-1252",
    "mac_roman": "Mac Roman",
    "mac_iceland": "Mac Icelandic",
    "cp850": "cp850 (DOS)",
    "utf-16": "UTF-16",
}
# Tried in this order when a file is not UTF-8; the first of equal scores wins.
_SINGLE_BYTE = ("cp1252", "mac_roman", "mac_iceland", "cp850")
_ICELANDIC_LETTERS = frozenset("áéíóúýþðæöÁÉÍÓÚÝÞÐÆÖ")
# Excel's first line naming the delimiter; what follows it is the header.
_SEP_LINE_RE = re.compile(rb"(?:\xef\xbb\xbf)?sep=(.)(?:\r\n|\n|\r)")
END_OF_FILE_MARK = b"\x1a"


def encoding_name(encoding: str) -> str:
    return ENCODINGS.get(encoding, encoding)


def _icelandic_score(text: str) -> int:
    """How much a reading looks like Icelandic (or any Latin) text: Icelandic letters count for it, symbols
    and control characters (what a wrong code page makes of letters) against it; other letters are neutral."""
    score = 0
    for char in text:
        if char < "\x80":
            continue
        if char in _ICELANDIC_LETTERS:
            score += 2
        elif not char.isalpha():
            score -= 2
    return score


def _single_byte_encoding(body: bytes) -> str:
    # Only the bytes above 127 differ between the candidates: scoring those characters alone is enough.
    high = bytes(byte for byte in body if byte > 127) if len(body) < 4096 else None
    sample = high if high is not None else body
    return max(_SINGLE_BYTE, key=lambda name: _icelandic_score(sample.decode(name, "replace")))


def sep_line_length(head: bytes) -> int:
    """The byte length of Excel's ``sep=X`` first line (with a BOM before it), 0 when there is none."""
    match = _SEP_LINE_RE.match(head)
    return match.end() if match else 0


def is_utf16(head: bytes, encoding: str | None) -> bool:
    return encoding == "utf-16" or (encoding is None and head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)))


def utf16_to_utf8(binary: IO[bytes]) -> IO[bytes]:
    """A UTF-16 file (with a BOM, or without: then its NUL bytes say the byte order) as UTF-8 in a temporary
    file: line ends are found as bytes, which UTF-16 does not allow."""
    binary.seek(0)
    head = binary.read(4096)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        codec = "utf-16"
    else:
        codec = "utf-16-le" if head[1::2].count(0) >= head[0::2].count(0) else "utf-16-be"
    binary.seek(0)
    decoder = codecs.getincrementaldecoder(codec)()
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    try:
        while True:
            block = binary.read(_BLOCK_BYTES)
            out.write(decoder.decode(block, final=not block).encode("utf-8"))
            if not block:
                break
    except UnicodeError:
        out.close()
        raise CsvFormatError("This file is not valid UTF-16 text; choose its encoding and upload it again.") from None
    out.seek(0)
    return out


def without_end_of_file_mark(binary: IO[bytes], size: int) -> IO[bytes]:
    """The file without a trailing Ctrl-Z (and the line end after it, if any): the file itself when it has
    none, else a temporary copy."""
    binary.seek(max(0, size - 3))
    tail = binary.read()
    mark = tail.rfind(END_OF_FILE_MARK)
    if mark < 0 or tail[mark + 1 :].strip(b"\r\n"):
        binary.seek(0)
        return binary
    keep = size - (len(tail) - mark)
    binary.seek(0)
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    while keep > 0 and (block := binary.read(min(_BLOCK_BYTES, keep))):
        out.write(block)
        keep -= len(block)
    out.seek(0)
    return out


# --- sniffing ---------------------------------------------------------------


def _decode_head(head: bytes, encoding: str | None = None) -> tuple[str, str, bool]:
    """(encoding, decoded text, has_bom) for the first bytes of a file, in `encoding` when it is given."""
    if encoding is not None:
        if encoding not in ENCODINGS or encoding == "utf-16":
            raise CsvFormatError(f"The portal cannot read the encoding “{encoding}”.")
        has_bom = head.startswith(codecs.BOM_UTF8) and encoding.startswith("utf-8")
        if has_bom:
            encoding, head = "utf-8-sig", head[len(codecs.BOM_UTF8) :]
        elif encoding == "utf-8-sig":
            encoding = "utf-8"
        return encoding, head.decode(encoding, "surrogateescape"), has_bom
    if head.startswith(codecs.BOM_UTF8):
        encoding, has_bom, body = "utf-8-sig", True, head[len(codecs.BOM_UTF8) :]
    else:
        encoding, has_bom, body = "utf-8", False, head
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # utf16_to_utf8 comes first
        raise CsvFormatError("This file is saved as UTF-16 text; choose UTF-16 as its encoding.")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\xd0\xcf\x11\xe0"):
        # .xlsx is a ZIP archive, .xls an OLE2 compound file: the usual mistake.
        raise CsvFormatError(
            "This looks like an Excel workbook, not a CSV file; in Excel choose "
            "Save As › “CSV UTF-8” and upload that file."
        )
    if b"\x00" in body:
        raise CsvFormatError(_NOT_TEXT)
    try:
        # final=False: the head may end in the middle of a multi-byte
        # character; the incomplete tail is held back instead of failing.
        text = codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError:
        # Bad bytes are escaped rather than refused here so that read_rows can
        # name the row holding them: cp1252 leaves five byte values undefined,
        # and a file with a UTF-8 BOM stays UTF-8 whatever follows.
        if not has_bom:
            encoding = _single_byte_encoding(body)
        text = body.decode(encoding, errors="surrogateescape")
    # Random binary data decodes as cp1252 happily; what gives it away is the
    # share of control characters, which a real CSV does not contain.
    if text and len(_CONTROL_RE.findall(text)) * 100 > len(text):
        raise CsvFormatError(_NOT_TEXT)
    return encoding, text, has_bom


def _first_record_counts(text: str) -> dict[str, int]:
    """How often each candidate delimiter occurs in the first record,
    outside double quotes (a quoted header cell may hold a newline)."""
    counts = dict.fromkeys(DELIMITERS, 0)
    in_quotes = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes  # "" inside quotes flips twice: no change
        elif in_quotes:
            continue
        elif char in "\r\n":
            break
        elif char in counts:
            counts[char] += 1
    return counts


def _detect_delimiter(text: str) -> str:
    header_counts = _first_record_counts(text)
    if not any(header_counts.values()):
        # One column: the header says so, whatever commas the data holds.
        return ","
    sample = text[:_SNIFF_SAMPLE_CHARS]
    last_newline = max(sample.rfind("\n"), sample.rfind("\r"))
    if last_newline > 0:
        sample = sample[:last_newline]  # drop a line cut off by the head size
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        sniffed = ""
    # Sniffer weighs consistency across many lines, which beats counting; but
    # a delimiter absent from the header cannot be the right one.
    if sniffed in header_counts and header_counts[sniffed] > 0:
        return sniffed
    # Ties go to the order of DELIMITERS (max returns the first maximum).
    return max(DELIMITERS, key=lambda candidate: header_counts[candidate])


def sniff(head: bytes, *, delimiter: str | None = None, encoding: str | None = None) -> CsvDialect:
    """Guess encoding and delimiter from the first bytes (~64 KiB) of a file.

    ``delimiter`` and ``encoding`` override detection; Excel's ``sep=X`` first line names the delimiter
    when none is given. An empty head gives UTF-8 and a comma; read_rows then reports the empty file.
    """
    if delimiter is not None and delimiter not in DELIMITERS:
        raise CsvFormatError("The delimiter must be a comma, a semicolon or a tab.")
    sep_line = _SEP_LINE_RE.match(head)
    if sep_line and delimiter is None:
        named = sep_line[1].decode("latin-1")
        if named not in DELIMITERS:
            raise CsvFormatError(
                f"The file's first line “sep={named}” names a delimiter the portal does not read; "
                "use a comma, a semicolon or a tab."
            )
        delimiter = named
    encoding, text, has_bom = _decode_head(head, encoding)
    if delimiter is None:
        delimiter = _detect_delimiter(text)
    return CsvDialect(encoding=encoding, delimiter=delimiter, has_bom=has_bom)


# --- reading ----------------------------------------------------------------


def _where(row_number: int) -> str:
    return "in the header row" if row_number == 0 else f"in row {row_number}"


def _check_decoded(cells: list[str], dialect: CsvDialect, row_number: int) -> None:
    if _UNDECODABLE_RE.search("".join(cells)):
        raise CsvFormatError(
            f"The file is not valid {encoding_name(dialect.encoding.removesuffix('-sig'))} text {_where(row_number)}; choose its "
            "encoding, or save it as “CSV UTF-8” and upload it again."
        )


def _read_error(exc: csv.Error, row_number: int) -> CsvFormatError:
    where = _where(row_number)
    if "field larger than field limit" in str(exc):
        return CsvFormatError(
            f"A cell {where} is longer than {csv.field_size_limit():,} characters; "
            "this is usually a quotation mark that is never closed."
        )
    return CsvFormatError(f"The file could not be read as CSV {where}.")


def _check_header(cells: list[str], max_columns: int | None) -> list[str]:
    header = [cell.strip() for cell in cells]
    while header and not header[-1]:
        header.pop()
    if not header:
        raise CsvFormatError("The first row must hold the column names, but it is empty.")
    if max_columns is not None and len(header) > max_columns:
        # Every column becomes a choice on the mapping page: thousands of them make a page nobody can use.
        raise CsvFormatError(
            f"The file has {len(header):,} columns; at most {max_columns:,} can be read. "
            "Remove the columns the links do not need and upload it again."
        )
    seen: dict[str, str] = {}
    for position, name in enumerate(header, start=1):
        if not name:
            raise CsvFormatError(f"Column {position} has no name in the header row; every column needs a name.")
        folded = name.casefold()
        if folded in seen:
            raise CsvFormatError(
                f"The column name “{name}” appears more than once in the header row; column names must be different."
            )
        seen[folded] = name
    return header


class _Lines:
    """The decoded lines of a binary file for csv.reader, counting the bytes handed out.

    csv.reader pulls exactly the lines of one record before returning it, so right after a record
    ``offset`` is the byte where the next record starts: a chunk of a file can later be read from there
    with a seek, without parsing what comes before it. Lines end at LF, CRLF or a lone CR (old Mac files),
    as with ``newline=""``; each line is decoded on its own (a newline byte is never part of a multi-byte
    UTF-8 character) with surrogateescape: bad bytes are reported per row by _iter_rows.
    """

    def __init__(self, binary_file: IO[bytes], encoding: str, *, start: int, end: int | None) -> None:
        self.offset = start
        self._binary = binary_file
        self._encoding = encoding
        self._end = end

    def __iter__(self) -> Iterator[str]:
        # The BOM only at the very start of the file; a U+FEFF at the start of a later line is text.
        encoding = self._encoding
        if encoding == "utf-8-sig":
            encoding = "utf-8"
            if not self.offset and self._binary.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:
                self.offset = len(codecs.BOM_UTF8)
            else:
                self._binary.seek(self.offset)
        end = self._end
        carry = b""
        while True:
            block = self._binary.read(_BLOCK_BYTES)
            if not block:
                lines = [carry] if carry else []
            else:
                # bytes.splitlines splits at LF, CRLF and a lone CR only (str.splitlines knows more). A CR at
                # the end of the block may be the first half of a CRLF: it waits for the next block.
                lines = (carry + block).splitlines(keepends=True)
                last = lines.pop()
                if last.endswith(b"\n"):
                    lines.append(last)
                    carry = b""
                else:
                    carry = last
            for line in lines:
                if end is not None and self.offset >= end:
                    return
                self.offset += len(line)
                yield line.decode(encoding, "surrogateescape")
            if not block:
                return


class Rows:
    """The ``(row_number, cells)`` of a file or of a chunk of it; ``offset`` is where the next record starts."""

    def __init__(self, lines: _Lines | _Span, rows: Iterator[tuple[int, list[str]]]) -> None:
        self._lines = lines
        self._rows = rows

    def __iter__(self) -> Rows:
        return self

    def __next__(self) -> tuple[int, list[str]]:
        return next(self._rows)

    @property
    def offset(self) -> int:
        return self._lines.offset


def read_rows(
    binary_file: IO[bytes],
    dialect: CsvDialect,
    *,
    max_rows: int | None = None,
    max_columns: int | None = None,
) -> tuple[list[str], Rows]:
    """Read the header now and return it with a lazy iterator of
    ``(row_number, cells)``; see the module docstring for the rules.

    The binary file is read from its start and is not closed.
    Header problems raise CsvFormatError here; problems further down
    (too many rows, bytes not valid in the encoding, a cell over the csv
    module's field size limit) raise it from the iterator.
    """
    binary_file.seek(0)
    start = sep_line_length(binary_file.read(16))
    binary_file.seek(start)
    lines = _Lines(binary_file, dialect.encoding, start=start, end=None)
    reader = csv.reader(lines, delimiter=dialect.delimiter)
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise _read_error(exc, 0) from exc
    if first is None:
        raise CsvFormatError("The file is empty.")
    _check_decoded(first, dialect, 0)
    header = _check_header(first, max_columns)
    return header, Rows(lines, _iter_rows(reader, dialect, len(header), max_rows, 0))


def read_chunk(
    binary_file: IO[bytes], dialect: CsvDialect, *, width: int, start: int, end: int | None, row_before: int
) -> Rows:
    """The rows of the records between the byte offsets ``start`` and ``end`` (both record starts that
    read_rows reported), numbered on from ``row_before``: what read_rows yields for them, without reading
    the rest of the file."""
    binary_file.seek(start)
    data = binary_file.read() if end is None else binary_file.read(end - start)
    if not start and dialect.encoding == "utf-8-sig" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    # A chunk is a few MB: decoded in one go, and its lines split by StringIO, which ends them where _Lines
    # does (LF, CRLF, a lone CR) — cheaper than a line at a time. Bad bytes are escaped as _Lines escapes them.
    encoding = "utf-8" if dialect.encoding == "utf-8-sig" else dialect.encoding
    try:
        text, decoded = data.decode(encoding), True  # valid throughout: no row needs looking at for bad bytes
    except UnicodeDecodeError:
        text, decoded = data.decode(encoding, "surrogateescape"), False
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=dialect.delimiter)
    return Rows(_Span(start + len(data)), _iter_rows(reader, dialect, width, None, row_before, decoded=decoded))


class _Span:
    """Where a chunk read whole ends (Rows.offset)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


def _iter_rows(
    reader: Any,
    dialect: CsvDialect,
    width: int,
    max_rows: int | None,
    row_before: int,
    yielded: int = 0,
    *,
    decoded: bool = False,
) -> Iterator[tuple[int, list[str]]]:
    # Runs once per row of files up to a million rows: ASCII rows (most of
    # them) skip the regex.
    row_number = row_before
    limit = max_rows if max_rows is not None else -1
    try:
        for cells in reader:
            row_number += 1
            if not cells:
                continue  # a blank line, not a row (see the module docstring)
            if not decoded:
                joined = "".join(cells)
                if not joined.isascii() and _UNDECODABLE_RE.search(joined):
                    _check_decoded(cells, dialect, row_number)
            yielded += 1
            if yielded > limit >= 0:
                raise CsvFormatError(f"The file has more than {limit:,} rows; split it into smaller files.")
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            elif len(cells) > width:
                while len(cells) > width and not cells[-1].strip():
                    cells.pop()
            yield row_number, cells
    except csv.Error as exc:
        raise _read_error(exc, row_number + 1) from exc


@dataclass
class RowCount:
    """What count_rows found: the rows (blank lines are not rows), whether any row has a value, and where
    the chunks of ``chunk_rows`` rows start: ``[byte offset, rows before it]``, as read_chunk takes them."""

    rows: int
    filled: bool
    starts: list[list[int]]


def count_rows(
    binary_file: IO[bytes], dialect: CsvDialect, *, start: int, width: int, chunk_rows: int, max_rows: int | None
) -> RowCount:
    """Read the records after the header (which ends at byte ``start``) as read_rows would, raising the same
    CsvFormatError, but without making a row of cells for each: the upload check of a million rows.

    Runs of whole lines without a quotation mark, a lone CR or a NUL, that decode in the file's encoding and
    hold no line longer than the csv module's field limit, are one record per line: they are counted by
    splitting bytes. Anything else (quoted cells, possibly spanning lines; a bad byte; a cell too long) is
    read by csv.reader from the record where the run starts, and counting goes back to bytes at the first
    record that starts after it — so every message names the row read_rows would name.
    """
    encoding = "utf-8" if dialect.encoding == "utf-8-sig" else dialect.encoding
    delimiter = dialect.delimiter.encode("ascii")
    limit = max_rows if max_rows is not None else -1
    field_limit = csv.field_size_limit()
    position, row_number, rows, filled = start, 0, 0, False
    boundaries: list[list[int]] = []  # after every chunk_rows-th row: [offset of the next record, its row number]
    binary_file.seek(start)
    pending = b""
    while True:
        block = binary_file.read(_BLOCK_BYTES)
        data = pending + block
        cut = data.rfind(b"\n") + 1 if block else len(data)
        # No LF in a whole block (lone CR line ends, or a line longer than a block): csv.reader reads it.
        whole_lines = bool(cut)
        segment, pending = (data[:cut], data[cut:]) if whole_lines else (data, b"")
        if not segment:
            break
        lines = segment.split(b"\n")
        if segment.endswith(b"\n"):
            lines.pop()
        try:
            plain = (
                whole_lines
                and b'"' not in segment
                and b"\x00" not in segment
                and segment.count(b"\r") == segment.count(b"\r\n")
                and max(map(len, lines)) <= field_limit
                and bool(segment.decode(encoding))
            )
        except UnicodeDecodeError:
            plain = False
        if plain and not lines.count(b"") and not lines.count(b"\r"):  # no blank line: one row per line
            first_row = rows
            rows += len(lines)
            if rows > limit >= 0:
                raise CsvFormatError(f"The file has more than {limit:,} rows; split it into smaller files.")
            for ending in range((first_row // chunk_rows + 1) * chunk_rows, rows + 1, chunk_rows):
                within = ending - first_row  # lines of this segment up to and including that row
                boundaries.append([position + sum(map(len, lines[:within])) + within, row_number + within])
            if not filled:
                filled = any(_line_filled(line, encoding, delimiter) for line in lines)
            row_number += len(lines)
            position += len(segment)
        elif plain:  # blank lines among them: not rows, but their numbers are used up
            for line in lines:
                row_number += 1
                position += len(line) + 1
                if not line or line == b"\r":
                    continue
                rows += 1
                if rows > limit >= 0:
                    raise CsvFormatError(f"The file has more than {limit:,} rows; split it into smaller files.")
                if rows % chunk_rows == 0:
                    boundaries.append([position, row_number])
                filled = filled or _line_filled(line, encoding, delimiter)
            if not segment.endswith(b"\n"):
                position -= 1  # the last line had no line end
        else:
            end = position + len(segment)
            binary_file.seek(position)
            lines_read = _Lines(binary_file, dialect.encoding, start=position, end=None)
            reader = csv.reader(lines_read, delimiter=dialect.delimiter)
            for number, cells in _iter_rows(reader, dialect, width, max_rows, row_number, rows):
                row_number = number
                rows += 1
                if rows % chunk_rows == 0:
                    boundaries.append([lines_read.offset, number])
                filled = filled or not is_empty(cells)
                if lines_read.offset >= end:
                    break
            else:
                break  # the end of the file
            position = lines_read.offset
            binary_file.seek(position)
            pending = b""
            continue
        if not block:
            break
    # A chunk starts only where a row follows: never after the last row.
    starts = [[start, 0]] + [point for index, point in enumerate(boundaries) if (index + 1) * chunk_rows < rows]
    return RowCount(rows=rows, filled=filled, starts=starts)


def _line_filled(line: bytes, encoding: str, delimiter: bytes) -> bool:
    """Whether a line read as one record without quotes has a cell that is not blank."""
    return bool(line.replace(delimiter, b"").decode(encoding).strip())


def is_empty(cells: list[str]) -> bool:
    """A row whose every cell is empty or whitespace."""
    return not "".join(cells).strip()


# --- limits -----------------------------------------------------------------


def _unit(limit: int) -> tuple[int, str]:
    if limit >= 1024 * 1024:
        return 1024 * 1024, "MB"
    if limit >= 1024:
        return 1024, "KB"
    return 1, "bytes"


def check_size(size: int, *, max_bytes: int) -> None:
    """Refuse an upload bigger than ``max_bytes`` (or empty) before reading it."""
    if size <= 0:
        raise CsvFormatError("The file is empty.")
    if size <= max_bytes:
        return
    scale, unit = _unit(max_bytes)
    # Size rounded up and limit rounded down to one decimal, so the message
    # never reads "the file is 10 MB; the limit is 10 MB".
    shown_size = math.ceil(size * 10 / scale) / 10
    shown_limit = math.floor(max_bytes * 10 / scale) / 10
    raise CsvFormatError(f"The file is {_number(shown_size)} {unit}; the limit is {_number(shown_limit)} {unit}.")


def _number(value: float) -> str:
    # "10.5", "10" (not "10.0"), never exponent notation.
    return f"{value:,.1f}".removesuffix(".0")


# --- writing ----------------------------------------------------------------


class ResultWriter:
    """Writes result rows to a text stream (opened with ``newline=""``) with
    the input's delimiter; every cell, header included, passes safe_cell.

    For Excel to show Icelandic letters, open the stream with encoding
    ``utf-8-sig``.
    """

    def __init__(
        self, text_stream: IO[str], *, delimiter: str, header: list[str] | None, line_end: str = "\r\n"
    ) -> None:
        if delimiter not in DELIMITERS:
            raise ValueError(f"delimiter must be one of {DELIMITERS!r}")
        if line_end not in ("\r\n", "\n"):
            raise ValueError("line_end must be CRLF or LF")
        # CRLF as RFC 4180 and Excel write it (LF for PassKit's format); quoting only where needed.
        self._writer = csv.writer(text_stream, delimiter=delimiter, lineterminator=line_end)
        self._stream = text_stream
        self._delimiter = delimiter
        self._line_end = line_end
        if header is not None:  # None: rows to be put after a header written elsewhere
            self._writer.writerow(safe_cells(header))

    def write_row(self, cells: list[str]) -> None:
        self._writer.writerow(safe_cells(cells))

    def write_rows(self, rows: list[list[str]]) -> None:
        """write_row for many rows of str, giving the same text."""
        self._stream.write(self.rows_text(rows))

    def rows_text(self, rows: list[list[str]]) -> str:
        """The text write_rows writes for these rows. Rows without a cell to quote (no quotation mark,
        delimiter or line break inside a cell) are joined as they are: csv.writer costs a few microseconds a
        row, a join a fraction of one."""
        rows = [safe_cells(cells) for cells in rows]
        delimiter, line_end = self._delimiter, self._line_end
        text = line_end.join(chain(map(delimiter.join, rows), ("",)))  # the "" ends the last line too
        lines = len(rows)
        plain = (
            '"' not in text
            and text.count("\n") == lines
            and text.count("\r") == (lines if line_end == "\r\n" else 0)
            and text.count(delimiter) == sum(map(len, rows)) - lines
            and min(map(len, rows), default=2) > 1  # csv.writer writes a lone empty cell as "" (else a blank line)
        )
        if plain:
            return text
        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator=line_end).writerows(rows)
        return out.getvalue()
