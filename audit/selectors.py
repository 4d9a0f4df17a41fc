"""Reads of the audit records: the filtered lists behind the pages and their CSV exports."""

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from .models import AuthEvent, StaffAction

# Spreadsheets run a cell starting with one of these as a formula; a typed user name is attacker-chosen.
_FORMULA_START = "=+-@\t\r"


@dataclass(frozen=True)
class AuditFilters:
    who: str = ""  # account / actor user name (exact, case-insensitive)
    kind: str = ""  # AuthEvent kind, or StaffAction action (prefix)
    ip: str = ""
    since: str = ""  # YYYY-MM-DD
    until: str = ""

    @classmethod
    def from_query(cls, query: QueryDict) -> "AuditFilters":
        return cls(**{f.name: query.get(f.name, "").strip()[:150] for f in fields(cls)})

    @property
    def is_filtered(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _between(records: QuerySet, filters: AuditFilters) -> QuerySet:
    zone = timezone.get_current_timezone()
    if since := _day(filters.since):
        records = records.filter(at__gte=datetime.combine(since, time.min, zone))
    if until := _day(filters.until):
        records = records.filter(at__lt=datetime.combine(until + timedelta(days=1), time.min, zone))
    return records


def auth_event_list(*, filters: AuditFilters) -> QuerySet[AuthEvent]:
    events = AuthEvent.objects.all()
    if filters.who:
        events = events.filter(username__iexact=filters.who)
    if filters.kind:
        events = events.filter(kind=filters.kind)
    if filters.ip:
        events = events.filter(ip_address=filters.ip)
    return _between(events, filters).order_by("-at", "-id")


def staff_action_list(*, filters: AuditFilters) -> QuerySet[StaffAction]:
    actions = StaffAction.objects.all()
    if filters.who:
        actions = actions.filter(actor_name__iexact=filters.who)
    if filters.kind:
        actions = actions.filter(action__startswith=filters.kind)
    if filters.ip:
        actions = actions.filter(ip_address=filters.ip)
    return _between(actions, filters).order_by("-at", "-id")


def _safe(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text and text[0] in _FORMULA_START else text


def _csv_lines(header: list[str], rows: Iterable[list]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_safe(cell) for cell in row])
        if buffer.tell() > 32_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def auth_event_csv_lines(*, events: QuerySet[AuthEvent]) -> Iterator[str]:
    header = ["time", "event", "account", "typed_fingerprint", "address", "user_agent", "detail"]
    rows = (
        [e.at.isoformat(), e.kind, e.username, e.typed_fingerprint, e.ip_address, e.user_agent, e.detail]
        for e in events.iterator(chunk_size=2000)
    )
    return _csv_lines(header, rows)


def staff_action_csv_lines(*, actions: QuerySet[StaffAction]) -> Iterator[str]:
    header = ["time", "who", "action", "object_type", "object_id", "object", "before", "after", "address"]
    rows = (
        [
            a.at.isoformat(),
            a.actor_name or "(shell)",
            a.action,
            a.object_type,
            a.object_id,
            a.object_repr,
            a.before,
            a.after,
            a.ip_address,
        ]
        for a in actions.iterator(chunk_size=2000)
    )
    return _csv_lines(header, rows)
