"""Data for the links panels that other apps' pages include (dashboard, template detail)."""

from django import template as django_template

from links import selectors

register = django_template.Library()

PANEL_BATCHES = 5


@register.simple_tag
def links_template_summary(template) -> dict:
    batches = selectors.link_batch_list(template=template)
    return {"recent": list(batches[:PANEL_BATCHES]), "count": batches.count()}


@register.simple_tag
def links_dashboard_stats() -> dict:
    return selectors.link_totals()
