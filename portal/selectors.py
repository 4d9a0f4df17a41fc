"""Reads that span the apps, for the dashboard and template pages."""
from django.db.models import QuerySet

from templates_sync import selectors as template_selectors
from templates_sync.models import PassTemplate


def templates_with_counts(templates: QuerySet[PassTemplate]) -> QuerySet[PassTemplate]:
    """The template list with what the other apps count per template (members, …)."""
    return templates.prefetch_related("input_fields")


def dashboard_summary() -> dict:
    return {
        "template_count": PassTemplate.objects.filter(removed_at__isnull=True).count(),
        "removed_template_count": PassTemplate.objects.filter(removed_at__isnull=False).count(),
        "last_sync": template_selectors.last_full_sync(),
        "last_successful_sync": template_selectors.last_successful_full_sync(),
    }
