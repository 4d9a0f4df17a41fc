"""Benchmark: what PassKit's extra columns cost per row, against the plain three-column row, in one run.

The per-row work of a batch (links.rows.RowRules: check_many, then link) on --rows rows of PassKit's header
names, for a template with name, email and phone fields: once for a file of only person.displayName,
person.emailAddress, person.mobileNumber (the column-wise fast path), once for the same rows plus
universal.expiryDate, person.forename, person.surname, person.externalId, members.member.externalId and
meta.customField mapped to their homes (row by row). No file, no database write: only the rows' own work,
the part a million-row upload repeats. Prints microseconds per row, the ratio, and the load average.

    DJANGO_SETTINGS_MODULE=portal.settings_test DATABASE_URL=... .venv/bin/python bench/passkit_rows.py [--rows 100000]

The template is written into the database's mirror (a throw-away row, deleted afterwards).
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402

from links.models import LinkBatch  # noqa: E402
from links.rows import RowRules  # noqa: E402
from links.selectors import link_columns_auto_match  # noqa: E402
from templates_sync.models import PassTemplate  # noqa: E402

PLAIN = ["person.displayName", "person.emailAddress", "person.mobileNumber"]
PASSKIT = PLAIN + [
    "universal.expiryDate",
    "person.forename",
    "person.surname",
    "person.externalId",
    "members.member.externalId",
    "meta.customField",
]


def template() -> PassTemplate:
    fields = [("name", "TEXT", True), ("email", "EMAIL", True), ("phone", "PHONE_NUMBER", False)]
    template_id = uuid.uuid4()
    raw = {
        "id": str(template_id),
        "type": "MEMBER",
        "status": "ACTIVE",
        "inputFields": [
            {"identifier": i, "label": i, "format": f, "type": "ISSUER", "isMandatory": m} for i, f, m in fields
        ],
    }
    now = timezone.now()
    return PassTemplate.objects.create(
        id=template_id, type="MEMBER", name="bench", status="ACTIVE", raw=raw, content_hash="x", first_seen_at=now,
        changed_at=now,
    )  # fmt: skip


def rows(count: int, header: list[str]) -> list[tuple[int, list[str]]]:
    made = []
    for number in range(1, count + 1):
        cells = [f"Félagi {number}", f"felagi{number}@example.is", f"+354 {8200000 + number % 999999}"]
        if len(header) > 3:
            cells += ["2099-12-31", "Félagi", str(number), f"P{number}", f"M{number}", "Gull"]
        made.append((number, cells))
    return made


def per_row(rules: RowRules, items: list[tuple[int, list[str]]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), 2000):
        for row in rules.check_many(items[start : start + 2000]):
            if not row.error:
                rules.link(row)
    return (time.perf_counter() - started) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    made = template()
    try:
        figures = {}
        for name, header in (("plain", PLAIN), ("passkit", PASSKIT)):
            batch = LinkBatch(
                id=1, template=made, header=header, mapping=link_columns_auto_match(template=made, header=header)
            )
            rules = RowRules(batch)
            items = rows(args.rows, header)
            per_row(rules, items[:2000])  # warm up
            figures[name] = min(per_row(rules, items) for _ in range(3))
        load = os.getloadavg()
        print(f"rows: {args.rows:,}; best of 3; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"plain 3 columns (fast path): {figures['plain']:.2f} µs/row")
        print(
            f"PassKit's 9 columns mapped:  {figures['passkit']:.2f} µs/row ({figures['passkit'] / figures['plain']:.2f}×)"
        )
    finally:
        made.delete()


if __name__ == "__main__":
    main()
