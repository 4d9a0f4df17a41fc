"""Member counts per template, kept as members come to be, so the template list never counts a million rows.

`member_issue` adds one in the transaction that inserts the member; nothing deletes members (templates are
PROTECTed and members are never removed). `template_member_counts_reconcile` (run by the refresh job) sets
each count to a real COUNT(*), correcting any drift from writes made outside the services (an import, a
manual fix in the database).
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction
from django.utils import timezone

from templates_sync.models import PassTemplate

from ..models import Member, TemplateMemberCount


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
