"""Member counts per template, kept as members come to be, so the template list never counts a million rows.

`member_issue` adds one in the transaction that inserts the member; nothing deletes members (templates are
PROTECTed and members are never removed). `template_member_counts_reconcile` (run by the refresh job) sets
each count to a real COUNT(*), correcting any drift from writes made outside the services (an import, a
manual fix in the database).

The counts per status (MemberStatusCount, for the dashboard) are kept by database triggers instead
(members.status_count_triggers); `member_status_counts_reconcile` (beat: portal.reconcile_dashboard_counts)
checks them against a real count.
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from templates_sync.models import PassTemplate

from ..models import Member, MemberStatusCount, TemplateMemberCount


def template_member_count_add(*, template_id: uuid.UUID, by: int = 1) -> None:
    """Add `by` to the template's count; call inside the transaction that inserts the members. One upsert
    statement (PostgreSQL and SQLite both have ON CONFLICT), so two first members of a template cannot race."""
    table = TemplateMemberCount._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (template_id, members) VALUES (%s, %s) "
            f"ON CONFLICT (template_id) DO UPDATE SET members = {table}.members + EXCLUDED.members",
            [template_id.hex if connection.vendor == "sqlite" else template_id, by],
        )


def template_member_counts_reconcile(*, template_ids: list[uuid.UUID] | None = None) -> int:
    """Set each template's count to its real number of members; returns how many counts were wrong.

    Each template's count row is locked before its members are counted: an insert that already added to it
    is committed (and counted) before the lock is granted, one that adds later waits for this transaction
    and then adds to the corrected number. So the result is exact, not just close."""
    templates = PassTemplate.objects.order_by("pk")
    if template_ids is not None:
        templates = templates.filter(pk__in=template_ids)
    wrong = 0
    for template_id in templates.values_list("pk", flat=True).iterator():
        with transaction.atomic():
            row, _ = TemplateMemberCount.objects.select_for_update().get_or_create(template_id=template_id)
            actual = Member.objects.filter(template_id=template_id).count()
            wrong += row.members != actual
            row.members, row.reconciled_at = actual, timezone.now()
            row.save(update_fields=["members", "reconciled_at"])
    return wrong


def member_status_counts_reconcile() -> int:
    """Set each (template, status) count the triggers keep (MemberStatusCount) to the real number of members;
    returns how many counts were wrong.

    As links.services.claim_days.claim_days_reconcile: one GROUP BY over the members (~0.35 s a million) finds
    the counts that look wrong; each is locked alone and counted again under the lock (exact); one row locked
    at a time, so the job never deadlocks with the triggers; a missing row is made first, on its own."""
    actual = dict(
        ((template_id, status), n)
        for template_id, status, n in Member.objects.order_by()
        .values_list("template_id", "status")
        .annotate(n=Count("*"))
    )
    kept = {
        (row[0], row[1]): row[2] for row in MemberStatusCount.objects.values_list("template_id", "status", "members")
    }
    for template_id, status in sorted(actual.keys() - kept.keys()):
        MemberStatusCount.objects.bulk_create(
            [MemberStatusCount(template_id=template_id, status=status, members=0)], ignore_conflicts=True
        )
    wrong = 0
    for template_id, status in sorted(actual.keys() | kept.keys()):
        if kept.get((template_id, status)) == actual.get((template_id, status), 0):
            continue
        with transaction.atomic():
            row = MemberStatusCount.objects.select_for_update().get(template_id=template_id, status=status)
            right = Member.objects.filter(template_id=template_id, status=status).count()
            if row.members != right:
                wrong += 1
                MemberStatusCount.objects.filter(pk=row.pk).update(members=right)
    return wrong
