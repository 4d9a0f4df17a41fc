"""The formula-injection guard for every CSV the portal writes: the member export and the link results.

Pure Python on purpose (no Django imports): links.csv_files imports it and must stay usable without
settings, and imports flow links -> members, so this is the one place the rule lives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["FORMULA_START", "safe_cell", "safe_cells"]

# Spreadsheets may run a cell that starts with one of these as a formula (OWASP "CSV injection"); a line
# break first hides one from the eye as a tab or carriage return does.
FORMULA_START = "=+-@\t\r\n"
# A cell starting with + or - that a spreadsheet can only read as a number or a phone number, never as a
# formula that does anything: a sign, then nothing but digits, spaces and the punctuation numbers are written
# with ("+354 858 1235", "+44 (0)20 7946 0958", "-5", "-1,5", "-12.5%", "-2024-05-01"), or a number in
# scientific notation ("-1.5e3"). No letter (no function, no DDE "cmd|"), no other operator after the sign,
# so "+cmd|…", "-2+3+cmd|…" and "+1+1" are still neutralised. "=" and "@" always start a formula, so they
# never qualify; neither do tab, CR and LF.
_NUMBER_LIKE_RE = re.compile(r"[+-](?:[0-9 ().,/%\u00a0-]*|[0-9]+(?:[.,][0-9]+)?[eE][+-]?[0-9]+)\Z")


def safe_cell(value: str) -> str:
    """A value a spreadsheet would evaluate as something other than a number gets a leading apostrophe so it
    shows as text: one starting with ``=`` or ``@``, a tab, CR or LF, or ``+``/``-`` followed by anything but a
    plainly written number. Phone numbers (``+354 858 1235``), signed numbers (``-5``) and dates stay exactly
    as given: other tools read the file too, and a lone number cannot run anything."""
    if value and value[0] in FORMULA_START and not _NUMBER_LIKE_RE.match(value):
        return "'" + value
    return value


def safe_cells(cells: Iterable[str]) -> list[str]:
    """safe_cell for a whole row, inlined: it runs for every cell of million-row files, and a function
    call per cell would cost more than the check itself."""
    number = _NUMBER_LIKE_RE.match
    return ["'" + cell if cell and cell[0] in FORMULA_START and not number(cell) else cell for cell in cells]
