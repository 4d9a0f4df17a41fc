"""How a batch's errors and warnings are summed up for its page: grouped by reason, with counts,
the first row numbers and one example."""

from __future__ import annotations

import re

# --- summary ---------------------------------------------------------------------------------------------------
# Messages name the values they are about (“…”) and rows and counts (digits): without them, the reason.
_QUOTED_RE = re.compile(r"“[^”]*”(?:, “[^”]*”)*")
_DIGITS_RE = re.compile(r"\d+")
SUMMARY_ROWS = 5
SUMMARY_REASONS = 50
OTHER_REASONS = "Other reasons"


class RowSummary:
    """Errors and warnings grouped by reason: how many rows, the first few row numbers, one example."""

    ERROR, WARNING = "error", "warning"

    def __init__(self, entries: list[dict] | None = None) -> None:
        self.entries: dict[tuple[str, str], dict] = {(e["kind"], e["reason"]): e for e in entries or []}

    @staticmethod
    def reason(message: str) -> str:
        return _DIGITS_RE.sub("N", _QUOTED_RE.sub("“…”", message.removeprefix("Warning: ")))

    def add(self, kind: str, message: str, row: int) -> None:
        key = (kind, self.reason(message))
        if key not in self.entries and len(self.entries) >= SUMMARY_REASONS:
            key = (kind, OTHER_REASONS)  # a message naming a value outside quotation marks: bounded all the same
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = {
                "kind": kind,
                "reason": key[1],
                "count": 1,
                "rows": [row],
                "example": message,
                "example_row": row,
            }
            return
        entry["count"] += 1
        if row < entry["example_row"]:
            entry["example"], entry["example_row"] = message, row
        if len(entry["rows"]) < SUMMARY_ROWS or row < entry["rows"][-1]:
            entry["rows"] = sorted(entry["rows"] + [row])[:SUMMARY_ROWS]

    def merge(self, entries: list[dict]) -> None:
        for other in entries:
            key = (other["kind"], other["reason"])
            if key not in self.entries and len(self.entries) >= SUMMARY_REASONS:
                key = (other["kind"], OTHER_REASONS)
            entry = self.entries.setdefault(key, {**other, "reason": key[1], "count": 0, "rows": []})
            entry["count"] += other["count"]
            entry["rows"] = sorted(entry["rows"] + other["rows"])[:SUMMARY_ROWS]
            if other["example_row"] < entry["example_row"]:
                entry["example"], entry["example_row"] = other["example"], other["example_row"]

    def replace_example(self, kind: str, row: int, message: str) -> None:
        entry = self.entries.get((kind, self.reason(message)))
        if entry is not None and entry["example_row"] == row:
            entry["example"] = message

    def as_json(self) -> list[dict]:
        """Errors first, then the most frequent reasons, then the earliest."""
        return sorted(
            self.entries.values(), key=lambda e: (e["kind"] != self.ERROR, -e["count"], e["rows"][0], e["reason"])
        )
