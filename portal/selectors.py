"""Reads that span the apps, for the dashboard and template pages, and the staff accounts."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db.models import Exists, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from links.selectors import link_claims_per_day
from members import selectors as member_selectors
from members.models import Member, TemplateMemberCount
from templates_sync import selectors as template_selectors
from templates_sync.models import PassTemplate


def templates_with_counts(templates: QuerySet[PassTemplate]) -> QuerySet[PassTemplate]:
    """The template list with what the other apps count per template (members, …).

    Member counts are read from the counts kept per template (members.services.counts), one row each: counting
    the members themselves took 113 ms at a million members.
    """
    member_count = TemplateMemberCount.objects.filter(template=OuterRef("pk")).values("members")[:1]
    return templates.annotate(member_count=Coalesce(Subquery(member_count, output_field=IntegerField()), Value(0)))


# Members still pending (or failed) this long after their claim need a person to look at them.
STUCK_AFTER = timedelta(hours=1)


def dashboard_summary() -> dict:
    return {
        "template_count": PassTemplate.objects.filter(removed_at__isnull=True).count(),
        "removed_template_count": PassTemplate.objects.filter(removed_at__isnull=False).count(),
        "last_sync": template_selectors.last_full_sync(),
        "last_successful_sync": template_selectors.last_successful_full_sync(),
        "claims_per_day": link_claims_per_day(),
        "members_by_status": members_by_status(),
        "stuck_members": stuck_members(),
        "stuck_minutes": int(STUCK_AFTER.total_seconds() // 60),
    }


def members_by_status() -> list[tuple[str, int]]:
    """(status label, members) for every status, in the model's order, from the counts kept per status."""
    counts = member_selectors.member_counts_by_status()
    return [(label, counts.get(value, 0)) for value, label in Member.Status.choices]


def stuck_members() -> dict[str, int]:
    """Pending and failed members created over STUCK_AFTER ago, by status: the kept count of each status less
    those created within STUCK_AFTER (a short range of the status index), never a count of every one of them."""
    stuck = (Member.Status.PENDING, Member.Status.FAILED)
    kept = member_selectors.member_counts_by_status()
    recent = member_selectors.members_created_since(since=timezone.now() - STUCK_AFTER, statuses=stuck)
    return {status: max(0, kept.get(status, 0) - recent.get(status, 0)) for status in stuck}


def staff_accounts():
    """Every account with its role and whether it has set up a second factor, for the admin's staff page."""
    return (
        get_user_model()
        .objects.filter(is_superuser=False)
        .prefetch_related("groups")
        .annotate(second_factor=Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)))
        .order_by("-is_active", "username")
    )
