"""Reads that span the apps, for the dashboard and template pages."""
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from members.models import Member
from templates_sync import selectors as template_selectors
from templates_sync.models import PassTemplate


def templates_with_counts(templates: QuerySet[PassTemplate]) -> QuerySet[PassTemplate]:
    """The template list with what the other apps count per template (members, …).

    A correlated subquery rather than a JOIN + GROUP BY: it runs for the rows of the page only (through the
    member (template, created) index), where a join would aggregate every member on every page view.
    """
    member_count = (
        Member.objects.filter(template=OuterRef("pk")).order_by().values("template").annotate(n=Count("*")).values("n")
    )
    return templates.prefetch_related("input_fields").annotate(
        member_count=Coalesce(Subquery(member_count, output_field=IntegerField()), Value(0))
    )


def dashboard_summary() -> dict:
    return {
        "template_count": PassTemplate.objects.filter(removed_at__isnull=True).count(),
        "removed_template_count": PassTemplate.objects.filter(removed_at__isnull=False).count(),
        "last_sync": template_selectors.last_full_sync(),
        "last_successful_sync": template_selectors.last_successful_full_sync(),
    }
