"""Data for the members panels that other apps' pages include (dashboard, template detail)."""

from django import template as django_template

from members import selectors

register = django_template.Library()


@register.simple_tag
def members_template_summary(template) -> dict:
    counts = selectors.member_status_counts(template=template)
    return {
        "count": selectors.template_member_count(template=template),
        "pending": counts["pending"],
        "failed": counts["failed"],
        "setting": selectors.autofill_setting_for(template=template),
        "open_conflicts": selectors.open_conflicts(template=template).count(),
    }


@register.simple_tag
def members_dashboard_stats() -> dict:
    total, exact = selectors.member_total()
    counts = selectors.member_status_counts()
    conflicts = selectors.open_conflicts()
    oldest = conflicts.order_by("opened_at").values_list("template_id", flat=True).first()
    return {
        "total": total,
        "exact": exact,
        "pending": counts["pending"],
        "failed": counts["failed"],
        "open_conflicts": conflicts.count(),
        "conflict_template_id": oldest,
    }
