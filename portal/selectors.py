"""Reads that span the apps, for the dashboard and template pages."""
from django.db.models import IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from members.models import TemplateMemberCount
from templates_sync import selectors as template_selectors
from templates_sync.models import PassTemplate


def templates_with_counts(templates: QuerySet[PassTemplate]) -> QuerySet[PassTemplate]:
    """The template list with what the other apps count per template (members, …).

    Member counts are read from the counts kept per template (members.services.counts), one row each: counting
    the members themselves took 113 ms at a million members.
    """
    member_count = TemplateMemberCount.objects.filter(template=OuterRef("pk")).values("members")[:1]
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
