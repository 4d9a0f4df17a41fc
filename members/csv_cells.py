"""The formula-injection guard for every CSV the portal writes: the member export and the link results.

Pure Python on purpose (no Django imports): links.csv_files imports it and must stay usable without
settings, and imports flow links -> members, so this is the one place the rule lives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["FORMULA_START", "safe_cell", "safe_cells"]

# Spreadsheets run a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_START = "=+-@\t\r"
# Optional sign, digits, optionally one decimal point or comma with digits.
_PLAIN_NUMBER_RE = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)?\Z")


def safe_cell(value: str) -> str:
    """A value starting with ``= + - @``, tab or CR gets a leading apostrophe so spreadsheets show it as
    text. Values that are entirely a plain number (``-12``, ``+3545551234``) are left alone: E.164 phone
    numbers start with ``+`` and must stay usable, and a lone number cannot run anything."""
    if value and value[0] in FORMULA_START and not _PLAIN_NUMBER_RE.match(value):
        return "'" + value
    return value


def safe_cells(cells: Iterable[str]) -> list[str]:
    """safe_cell for a whole row, inlined: it runs for every cell of million-row files, and a function
    call per cell would cost more than the check itself."""
    number = _PLAIN_NUMBER_RE.match
    return ["'" + cell if cell and cell[0] in FORMULA_START and not number(cell) else cell for cell in cells]
