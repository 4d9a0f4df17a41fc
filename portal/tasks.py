"""Celery entry points for what spans the apps: thin, they call the apps' services."""

from celery import shared_task

from links.services.claim_days import claim_days_reconcile
from members.services.counts import member_status_counts_reconcile


@shared_task(name="portal.reconcile_dashboard_counts", ignore_result=True)
def reconcile_dashboard_counts() -> dict[str, int]:
    """Beat, hourly: the dashboard's kept counts (claims per day, members per status) set to real counts;
    returns how many of each were wrong (normally none)."""
    return {"claim_days": claim_days_reconcile(), "member_status_counts": member_status_counts_reconcile()}
