"""`{% batch_claim_counts batch %}`: what holders did with a batch's links (its funnel and claims per day), for
the staff batch page."""

from django import template

from links import claims, selectors, send_selectors

register = template.Library()


@register.inclusion_tag("links/_claim_counts.html")
def batch_claim_counts(batch) -> dict:
    return {
        "batch": batch,
        "counts": claims.link_batch_claim_counts(batch=batch),
        "per_day": selectors.link_claims_per_day(batch_id=batch.pk),
        "funnel": send_selectors.batch_funnel(batch=batch),
    }
