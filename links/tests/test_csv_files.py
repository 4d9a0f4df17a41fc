"""Campaign CSV reading and result CSV writing.

Pure Python: files are built in tmp_path; no Django settings, no database.
"""

from __future__ import annotations

import csv
import gc
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from links import csv_files
from links.csv_files import (
    CsvDialect,
    CsvFormatError,
    ResultWriter,
    check_size,
    count_rows,
    read_chunk,
    read_rows,
    safe_cell,
    sniff,
)

HEAD_BYTES = 64 * 1024


def load(path: Path, *, delimiter: str | None = None, max_rows: int | None = None):
    """Sniff and read a file the way the upload service does; rows as a list."""
    with path.open("rb") as binary:
        dialect = sniff(binary.read(HEAD_BYTES), delimiter=delimiter)
        binary.seek(0)
        header, rows = read_rows(binary, dialect, max_rows=max_rows)
        return dialect, header, list(rows)


def make(tmp_path: Path, data: bytes, name: str = "campaign.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- encodings ----------------------------------------------------------------


def test_a_utf8_bom_is_detected_and_kept_out_of_the_first_column_name(tmp_path: Path) -> None:
    path = make(tmp_path, b"\xef\xbb\xbfname,email\r\nLaura,laura@example.is\r\n")
    dialect, header, rows = load(path)
    assert dialect == CsvDialect(encoding="utf-8-sig", delimiter=",", has_bom=True)
    assert header == ["name", "email"]
    assert rows == [(1, ["Laura", "laura@example.is"])]


def test_utf8_without_bom_is_read_as_utf8(tmp_path: Path) -> None:
    path = make(tmp_path, "nafn,netfang\nÞórdís Ævarsdóttir,tóta@dæmi.is\n".encode())
    dialect, header, rows = load(path)
    assert (dialect.encoding, dialect.has_bom) == ("utf-8", False)
    assert rows == [(1, ["Þórdís Ævarsdóttir", "tóta@dæmi.is"])]


def test_icelandic_letters_saved_as_cp1252_are_read_correctly(tmp_path: Path) -> None:
    path = make(tmp_path, "nafn;athugasemd\r\nþðæö;ÞÐÆÖ áéíóúý\r\n".encode("cp1252"))
    dialect, header, rows = load(path)
    assert dialect.encoding == "cp1252"
    assert rows == [(1, ["þðæö", "ÞÐÆÖ áéíóúý"])]


def test_a_head_cut_in_the_middle_of_a_utf8_character_still_counts_as_utf8(
    tmp_path: Path,
) -> None:
    data = ("nafn\n" + "þ" * 40_000 + "\n").encode()
    head = data[:HEAD_BYTES]
    with pytest.raises(UnicodeDecodeError):
        head.decode("utf-8")  # the cut really splits a character
    assert sniff(head).encoding == "utf-8"
    _, header, rows = load(make(tmp_path, data))
    assert header == ["nafn"] and rows == [(1, ["þ" * 40_000])]


def test_invalid_utf8_after_the_sniffed_head_is_a_file_error_not_a_crash(tmp_path: Path) -> None:
    data = b"name\n" + b"a\n" * 40_000 + "þ\n".encode("cp1252")
    with pytest.raises(
        CsvFormatError, match="^The file is not valid UTF-8 text in row 40001; choose its encoding, or save it as"
    ):
        load(make(tmp_path, data))


def test_a_byte_windows_1252_does_not_define_is_reported_with_its_row(tmp_path: Path) -> None:
    data = "nafn\r\nþóra\r\n".encode("cp1252") + b"\r\nbad \x81 byte\r\n"
    with pytest.raises(CsvFormatError, match="^The file is not valid Windows-1252 text in row 3;"):
        load(make(tmp_path, data))


def test_a_file_with_a_utf8_bom_stays_utf8_and_its_bad_row_is_named(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfnafn\r\nJ\xf3n\r\n"
    assert sniff(data).encoding == "utf-8-sig"
    with pytest.raises(CsvFormatError, match="^The file is not valid UTF-8 text in row 1;"):
        load(make(tmp_path, data))


@pytest.mark.parametrize(
    "junk",
    [
        random.Random(7).randbytes(4096),
        bytes(range(1, 9)) * 500,  # no NUL, but nothing but control characters
        b"name,email\r\nLaura\x00,x\r\n",
    ],
)
def test_binary_junk_is_refused_with_a_plain_sentence(tmp_path: Path, junk: bytes) -> None:
    with pytest.raises(CsvFormatError) as caught:
        load(make(tmp_path, junk))
    assert str(caught.value) == "This file does not look like a CSV text file."


def test_an_excel_workbook_gets_told_to_save_as_csv() -> None:
    with pytest.raises(CsvFormatError, match="Excel workbook"):
        sniff(b"PK\x03\x04\x14\x00\x06\x00" + bytes(200))


def test_a_utf16_file_gets_told_to_save_as_utf8() -> None:
    with pytest.raises(CsvFormatError, match="UTF-16"):
        sniff("name\tphone\r\n".encode("utf-16"))


# --- delimiters ---------------------------------------------------------------


def test_semicolons_are_detected_even_with_decimal_commas(tmp_path: Path) -> None:
    path = make(tmp_path, "nafn;upphæð;sími\r\nJón;1,5;+3545551234\r\nGunna;2,75;8885555\r\n".encode())
    dialect, header, rows = load(path)
    assert dialect.delimiter == ";"
    assert header == ["nafn", "upphæð", "sími"]
    assert rows[1] == (2, ["Gunna", "2,75", "8885555"])


def test_tabs_are_detected(tmp_path: Path) -> None:
    path = make(tmp_path, b"name\temail\nLaura Loopy\tlaura@example.is\n")
    dialect, _, rows = load(path)
    assert dialect.delimiter == "\t"
    assert rows == [(1, ["Laura Loopy", "laura@example.is"])]


def test_commas_are_detected_when_quoted_cells_hold_semicolons(tmp_path: Path) -> None:
    path = make(tmp_path, b'name,note\r\n"A","x;y;z"\r\n"B","p;q"\r\n')
    dialect, _, rows = load(path)
    assert dialect.delimiter == ","
    assert rows == [(1, ["A", "x;y;z"]), (2, ["B", "p;q"])]


def test_a_single_column_file_uses_comma_whatever_the_data_holds() -> None:
    assert sniff(b"email\r\na;b@example.is\r\nc;d@example.is\r\n").delimiter == ","


def test_a_given_delimiter_overrides_detection(tmp_path: Path) -> None:
    path = make(tmp_path, b"a;b;c\r\n1;2,5;3\r\n")
    assert load(path)[0].delimiter == ";"
    dialect, header, rows = load(path, delimiter=",")
    assert dialect.delimiter == "," and header == ["a;b;c"] and rows == [(1, ["1;2", "5;3"])]
    with pytest.raises(CsvFormatError, match="comma, a semicolon or a tab"):
        sniff(b"a|b\n", delimiter="|")


# --- records ------------------------------------------------------------------


def test_quoted_newlines_and_crlf_line_ends_are_kept_inside_cells(tmp_path: Path) -> None:
    path = make(tmp_path, b'name,note\r\nA,"line 1\r\nline 2"\r\nB,"x\ny"\r\nC,plain\r\n')
    _, header, rows = load(path)
    assert header == ["name", "note"]
    assert rows == [(1, ["A", "line 1\r\nline 2"]), (2, ["B", "x\ny"]), (3, ["C", "plain"])]


def test_a_header_only_file_gives_the_header_and_no_rows(tmp_path: Path) -> None:
    for data in (b"name,email\r\n", b"name,email"):
        _, header, rows = load(make(tmp_path, data))
        assert header == ["name", "email"] and rows == []


def test_an_empty_file_is_a_file_error(tmp_path: Path) -> None:
    for data in (b"", b"\xef\xbb\xbf"):
        with pytest.raises(CsvFormatError, match="^The file is empty.$"):
            load(make(tmp_path, data))


def test_header_cells_are_stripped_and_trailing_empty_ones_dropped(tmp_path: Path) -> None:
    _, header, rows = load(make(tmp_path, b" name , email ,,\r\na,b,,\r\n"))
    assert header == ["name", "email"]
    assert rows == [(1, ["a", "b"])]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"name,email,Name\r\na,b,c\r\n", "“Name” appears more than once"),
        (b"name,email,email \r\n", "“email” appears more than once"),
        (b"name,,email\r\n", "Column 2 has no name"),
        (b",,\r\na,b,c\r\n", "first row must hold the column names"),
        (b"\r\nname,email\r\n", "first row must hold the column names"),
    ],
)
def test_a_blank_or_duplicated_header_is_a_file_error(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(CsvFormatError, match=message):
        load(make(tmp_path, data))


def test_ragged_rows_are_padded_or_keep_their_extra_cells(tmp_path: Path) -> None:
    path = make(tmp_path, b"a,b,c\r\n1\r\n1,2\r\n1,2,3,4\r\n1,2,3,,\r\n1,2,3, ,5\r\n")
    _, _, rows = load(path)
    assert rows == [
        (1, ["1", "", ""]),
        (2, ["1", "2", ""]),
        (3, ["1", "2", "3", "4"]),  # the caller reports the extra cell
        (4, ["1", "2", "3"]),  # empty cells past the header carry nothing
        (5, ["1", "2", "3", " ", "5"]),
    ]


def test_blank_lines_are_skipped_but_keep_their_row_number(tmp_path: Path) -> None:
    path = make(tmp_path, b"a,b\r\n1,2\r\n\r\n\n3,4\r\n\r\n")
    _, _, rows = load(path)
    assert rows == [(1, ["1", "2"]), (4, ["3", "4"])]


def test_records_with_only_empty_cells_are_rows_so_the_caller_can_echo_them(tmp_path: Path) -> None:
    path = make(tmp_path, b"a,b\r\n1,2\r\n,\r\n\r\n , \r\n \r\n,,,\r\n3,4\r\n")
    _, _, rows = load(path)
    assert rows == [
        (1, ["1", "2"]),
        (2, ["", ""]),
        (4, [" ", " "]),  # row 3 was a blank line
        (5, [" ", ""]),  # one cell, padded
        (6, ["", ""]),  # empty cells past the header carry nothing
        (7, ["3", "4"]),
    ]


def test_empty_records_count_toward_the_row_limit_but_blank_lines_do_not(tmp_path: Path) -> None:
    path = make(tmp_path, b'a\r\n1\r\n\r\n""\r\n2\r\n')
    assert [number for number, _ in load(path, max_rows=3)[2]] == [1, 3, 4]
    with pytest.raises(CsvFormatError, match="^The file has more than 2 rows"):
        load(path, max_rows=2)


def test_more_rows_than_allowed_is_a_file_error_while_iterating(tmp_path: Path) -> None:
    path = make(tmp_path, b"a\r\n1\r\n\r\n2\r\n3\r\n")
    assert [number for number, _ in load(path, max_rows=3)[2]] == [1, 3, 4]
    with path.open("rb") as binary:
        header, rows = read_rows(binary, sniff(path.read_bytes()), max_rows=2)
        assert header == ["a"]
        assert next(rows) == (1, ["1"])
        assert next(rows) == (3, ["2"])
        with pytest.raises(CsvFormatError, match="^The file has more than 2 rows; split it"):
            next(rows)


def test_a_quote_that_is_never_closed_is_a_file_error(tmp_path: Path) -> None:
    data = b'name,note\r\nA,"oops\r\n' + b"B,more text\r\n" * 20_000
    with pytest.raises(CsvFormatError, match="never closed"):
        load(make(tmp_path, data))


def test_reading_leaves_the_callers_file_open(tmp_path: Path) -> None:
    path = make(tmp_path, b"a,b\r\n1,2\r\n")
    with path.open("rb") as binary:
        header, rows = read_rows(binary, sniff(path.read_bytes()))
        list(rows)
        del rows
        gc.collect()
        assert not binary.closed
        binary.seek(0)
        assert binary.read(3) == b"a,b"


# --- size ---------------------------------------------------------------------


def test_check_size_allows_files_up_to_the_limit() -> None:
    check_size(10 * 1024 * 1024, max_bytes=10 * 1024 * 1024)
    check_size(1, max_bytes=10)


def test_check_size_says_how_big_the_file_is_and_what_the_limit_is() -> None:
    with pytest.raises(CsvFormatError, match=r"^The file is 10\.1 MB; the limit is 10 MB\.$"):
        check_size(10 * 1024 * 1024 + 1, max_bytes=10 * 1024 * 1024)
    with pytest.raises(CsvFormatError, match=r"^The file is 25 MB; the limit is 20 MB\.$"):
        check_size(25 * 1024 * 1024, max_bytes=20 * 1024 * 1024)
    with pytest.raises(CsvFormatError, match="^The file is empty.$"):
        check_size(0, max_bytes=10)


# --- formula injection --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=SUM(A1)", "'=SUM(A1)"),
        ("+cmd", "'+cmd"),
        ("-2+3", "'-2+3"),
        ("@x", "'@x"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("+354 555 1234", "+354 555 1234"),  # a phone number stays as given (issue 20)
        ("-12", "-12"),
        ("+3545551234", "+3545551234"),
        ("-1,5", "-1,5"),
        ("+2.25", "+2.25"),
        ("", ""),
        ("Laura Loopy", "Laura Loopy"),
        ("a=b", "a=b"),
        ("https://portal.example.is/p/AQ-x_", "https://portal.example.is/p/AQ-x_"),
    ],
)
def test_safe_cell_defuses_formulas_but_leaves_plain_numbers_alone(value: str, expected: str) -> None:
    assert safe_cell(value) == expected


@pytest.mark.slow  # starts processes
def test_the_formula_guard_is_the_member_exports_and_reading_csv_needs_no_django() -> None:
    from members import csv_cells

    assert safe_cell is csv_cells.safe_cell  # one rule for every CSV the portal writes
    script = "import sys, links.csv_files; print(sorted(m for m in sys.modules if m.startswith('django')))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]"


# --- writing ------------------------------------------------------------------

ROWS = [
    ["Laura Loopy", "laura.loopy@example.com", "+3545551234", "https://portal.example.is/p/AQ", ""],
    ['Þórdís; "Tóta"', "tota@dæmi.is", "-12", "", "Row 2: email is missing"],
    ["line 1\r\nline 2", "a,b\tc", "", "", "two\nlines"],
]
HEADER = ["name", "email", "phone", "smartpass_link", "error"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_result_writer_output_reads_back_as_the_rows_written(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "result.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as text:
        writer = ResultWriter(text, delimiter=delimiter, header=HEADER)
        for row in ROWS:
            writer.write_row(row)
    dialect, header, rows = load(path)
    assert dialect.has_bom and dialect.delimiter == delimiter
    assert header == HEADER
    assert rows == list(enumerate(ROWS, start=1))


def test_result_writer_escapes_formulas_in_every_cell() -> None:
    out = io.StringIO(newline="")
    writer = ResultWriter(out, delimiter=",", header=["=name", "email"])
    writer.write_row(['=HYPERLINK("http://evil")', "@x"])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["'=name", "email"],
        ['\'=HYPERLINK("http://evil")', "'@x"],
    ]


@given(st.lists(st.lists(st.text(), min_size=1, max_size=6), max_size=5))
def test_result_writer_survives_any_text_and_reads_back_with_formulas_defused(
    rows: list[list[str]],
) -> None:
    out = io.StringIO(newline="")
    writer = ResultWriter(out, delimiter=";", header=["a"])
    for row in rows:
        writer.write_row(row)
    read_back = list(csv.reader(io.StringIO(out.getvalue(), newline=""), delimiter=";"))
    assert read_back == [["a"]] + [[safe_cell(cell) for cell in row] for row in rows]


# --- counting rows for the upload check ---------------------------------------------------------------------
def _counted_by_reading(data: bytes, dialect: CsvDialect, chunk_rows: int, max_rows: int | None):
    """What count_rows must give: every row read as read_rows reads it, the chunk starts taken as it goes."""
    header, rows = read_rows(io.BytesIO(data), dialect, max_rows=max_rows)
    starts, count, filled, boundary = [[rows.offset, 0]], 0, False, None
    for number, cells in rows:
        if boundary:  # a row follows a full chunk: the next chunk starts where that chunk ended
            starts.append(boundary)
            boundary = None
        count += 1
        filled = filled or bool("".join(cells).strip())
        if count % chunk_rows == 0:
            boundary = [rows.offset, number]
    return count, filled, starts


def _counted(data: bytes, dialect: CsvDialect, chunk_rows: int, max_rows: int | None):
    binary = io.BytesIO(data)
    header, rows = read_rows(binary, dialect)
    found = count_rows(binary, dialect, start=rows.offset, width=len(header), chunk_rows=chunk_rows, max_rows=max_rows)
    return found.rows, found.filled, found.starts


def _outcome(count, *args):
    try:
        return count(*args)
    except CsvFormatError as exc:
        return str(exc)


# Pieces that take count_rows off its byte-counting path (quotes, line breaks in cells, lone CRs, blank
# lines, blank rows, bytes not valid UTF-8, NULs) among plain ones.
_PIECES = [b"a", b"b,c", b"\xc3\xb0", b",", b" ", b"\r\n", b"\n", b"\r", b'"', b'"x\ny"', b'""', b"\xff", b"\x00"]


@given(
    body=st.lists(st.sampled_from(_PIECES), max_size=60),
    chunk_rows=st.integers(1, 4),
    max_rows=st.sampled_from([None, 3, 10]),
    block=st.integers(1, 16),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
)
def test_counting_rows_gives_what_reading_them_gives(body, chunk_rows, max_rows, block, encoding) -> None:
    bom = b"\xef\xbb\xbf" if encoding == "utf-8-sig" else b""
    data = bom + b"name,email\r\n" + b"".join(body)
    dialect = CsvDialect(encoding=encoding, delimiter=",", has_bom=bool(bom))
    expected = _outcome(_counted_by_reading, data, dialect, chunk_rows, max_rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_files, "_BLOCK_BYTES", block)  # runs and records across many block ends
        assert _outcome(_counted, data, dialect, chunk_rows, max_rows) == expected


def test_counting_a_large_plain_file_takes_its_chunk_starts_where_reading_does(tmp_path: Path) -> None:
    lines = [f"holder{number}@example.is,Jón {number}" for number in range(1, 25_001)]
    data = ("email,name\r\n" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    dialect = CsvDialect(encoding="utf-8", delimiter=",", has_bom=False)
    found = _counted(data, dialect, 7_000, None)
    assert found == _counted_by_reading(data, dialect, 7_000, None)
    assert found[0] == 25_000 and len(found[2]) == 4


_CELLS = st.text(alphabet=st.sampled_from(list('ab01.,;\t"\r\n =+-@ð')), max_size=6)


@given(
    rows=st.lists(st.lists(_CELLS, min_size=1, max_size=4), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_writing_many_rows_at_once_gives_the_text_of_writing_them_one_by_one(rows, delimiter) -> None:
    one_by_one, at_once = io.StringIO(), io.StringIO()
    single = ResultWriter(one_by_one, delimiter=delimiter, header=None)
    for cells in rows:
        single.write_row(cells)
    ResultWriter(at_once, delimiter=delimiter, header=None).write_rows(rows)
    assert at_once.getvalue() == one_by_one.getvalue()


@given(
    body=st.lists(st.sampled_from(_PIECES), max_size=60),
    chunk_rows=st.integers(1, 4),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
)
def test_reading_a_file_chunk_by_chunk_gives_the_rows_of_reading_it_whole(body, chunk_rows, encoding) -> None:
    bom = b"\xef\xbb\xbf" if encoding == "utf-8-sig" else b""
    data = bom + b"name,email\r\n" + b"".join(body)
    dialect = CsvDialect(encoding=encoding, delimiter=",", has_bom=bool(bom))
    whole = _outcome(lambda: list(read_rows(io.BytesIO(data), dialect)[1]))
    counted = _outcome(_counted, data, dialect, chunk_rows, None)
    if isinstance(whole, str) or isinstance(counted, str):  # a file the upload refuses is never read in chunks
        return
    starts = counted[2]
    ends = [start for start, _ in starts[1:]] + [None]
    in_chunks = _outcome(
        lambda: [
            row
            for (start, row_before), end in zip(starts, ends, strict=True)
            for row in read_chunk(io.BytesIO(data), dialect, width=2, start=start, end=end, row_before=row_before)
        ]
    )
    assert in_chunks == whole
