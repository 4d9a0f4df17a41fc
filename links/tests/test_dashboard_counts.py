"""The dashboard's kept counts — claims per day (ClaimDay, kept by the claim flow) and members per status
(MemberStatusCount, kept by triggers) — equal the raw counts after claims, concurrent claims and status
changes, writes that bypass the portal, and the reconcile job; on PostgreSQL, and on SQLite (the embedded
default) through the same migrations."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.utils import timezone

from conftest import run_on_sqlite
from links import claims
from links.models import ClaimDay, LinkClaim
from links.services.claim_days import claim_days_reconcile
from members.models import Member, MemberStatusCount
from members.services.counts import member_status_counts_reconcile
from members.tests.factories import make_member
from portal import selectors as dashboard
from portal.tasks import reconcile_dashboard_counts
from templates_sync.models import PassTemplate

from .claim_factories import link_path, mirror
from .test_claim_concurrency import payload_of


def raw_claim_days() -> dict:
    by_day = LinkClaim.objects.order_by().annotate(d=TruncDate("at")).values("d").annotate(n=Count("*"))
    return {row["d"]: row["n"] for row in by_day}


def kept_claim_days() -> dict:
    return {day: n for day, n in ClaimDay.objects.values_list("day", "claims") if n}


def raw_status_counts() -> dict:
    return dict(Counter(Member.objects.values_list("template_id", "status")))


def kept_status_counts() -> dict:
    return {(row.template_id, row.status): row.members for row in MemberStatusCount.objects.all() if row.members}


def a_copy_of(template: PassTemplate) -> PassTemplate:
    """A second template in the mirror (the same row under a new id)."""
    template.pk = uuid.uuid4()
    template.save(force_insert=True)
    return template


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_of_distinct_and_of_one_link_keep_claims_per_day_and_status_counts_exact(
    sandbox, run_at_a_barrier
):
    club = mirror()
    distinct = [payload_of(link_path(fields={"name": f"Holder {n}", "email": f"h{n}@example.is"})) for n in range(20)]
    shared = payload_of(link_path(fields={"name": "Anna", "email": "anna@example.is"}, batch_id=3, row=1))
    work = iter([*distinct, *[shared] * 10])
    payloads = iter([next(work) for _ in range(30)])  # next() of a list's iterator is atomic under the GIL

    def claim(barrier):
        payload = next(payloads)
        context = claims.claim_context_for(payload=payload)
        nonce = claims.new_claim_nonce()
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers={}, nonce=nonce)

    outcomes, errors = run_at_a_barrier(30, claim)

    assert errors == [] and len(outcomes) == 30
    assert LinkClaim.objects.count() == 30  # every press recorded, new member or found
    assert kept_claim_days() == raw_claim_days() == {timezone.localdate(): 30}
    assert kept_status_counts() == raw_status_counts() and Member.objects.filter(template=club).count() >= 21
    assert dict(dashboard.members_by_status())["Issued"] == Member.objects.filter(status="issued").count()
    assert dashboard.link_claims_per_day()[-1] == (timezone.localdate(), 30)
    assert reconcile_dashboard_counts() == {"claim_days": 0, "member_status_counts": 0}


@pytest.mark.django_db(transaction=True)
def test_status_counts_follow_racing_status_changes_bulk_updates_raw_sql_and_deletes(sandbox, run_at_a_barrier):
    club, other = mirror(), a_copy_of(mirror())
    members = [make_member(club if n % 3 else other, name=f"M {n}", status="pending") for n in range(60)]
    targets = ["issued", "failed", "voided", "redeemed"]

    ids = iter(range(20))

    def change(barrier):
        n = next(ids)
        barrier.wait(timeout=30)
        for k in range(3):  # three members each; each row moves once, the same rows never in two threads
            member = members[n * 3 + k]
            Member.objects.filter(pk=member.pk).update(status=targets[(n + k) % 4])

    _, errors = run_at_a_barrier(20, change)
    assert errors == []
    assert kept_status_counts() == raw_status_counts()

    Member.objects.filter(template=other).update(status="voided")  # one statement, many rows
    Member.objects.filter(template=club, status="failed").update(values={})  # no status change: no delta
    with connection.cursor() as cursor:  # a write outside the services: the triggers see it too
        cursor.execute("UPDATE members_member SET status = 'issued' WHERE status = 'pending'")
    Member.objects.filter(pk__in=[m.pk for m in members[:5]]).delete()
    assert kept_status_counts() == raw_status_counts()
    assert sum(n for _, n in dashboard.members_by_status()) == Member.objects.count() == 55


@pytest.mark.django_db
def test_stuck_members_are_the_kept_counts_less_the_last_hour(sandbox):
    club = mirror()
    old = timezone.now() - timedelta(hours=2)
    for n in range(4):
        make_member(club, name=f"Old {n}", status="pending" if n < 3 else "failed")
    Member.objects.update(created_at=old)
    make_member(club, name="New", status="pending")
    make_member(club, name="New too", status="failed")
    assert dashboard.stuck_members() == {"pending": 3, "failed": 1}


@pytest.mark.django_db
def test_reconcile_sets_drifted_counts_right_and_then_finds_nothing_wrong(sandbox):
    club = mirror()
    for n in range(5):
        make_member(club, name=f"M {n}", status="issued" if n else "pending")
    # Claims written outside the claim flow (an import) and a broken count: drift the job must repair.
    for days_ago in (0, 0, 2, 40):
        claim = LinkClaim.objects.create(template=club, outcome="new")
        LinkClaim.objects.filter(pk=claim.pk).update(at=timezone.now() - timedelta(days=days_ago))
    ClaimDay.objects.create(day=timezone.localdate() - timedelta(days=5), claims=7)  # no claims that day
    MemberStatusCount.objects.filter(status="issued").update(members=99)
    MemberStatusCount.objects.filter(status="pending").delete()
    assert kept_claim_days() != raw_claim_days() and kept_status_counts() != raw_status_counts()

    assert reconcile_dashboard_counts() == {"claim_days": 4, "member_status_counts": 2}

    assert kept_claim_days() == raw_claim_days() and kept_status_counts() == raw_status_counts()
    assert reconcile_dashboard_counts() == {"claim_days": 0, "member_status_counts": 0}
    assert claim_days_reconcile() == 0 and member_status_counts_reconcile() == 0


@pytest.mark.django_db(transaction=True)
def test_reconcile_racing_claims_and_status_changes_leaves_the_counts_exact(sandbox, run_at_a_barrier):
    mirror()
    payloads = [payload_of(link_path(fields={"name": f"R {n}", "email": f"r{n}@example.is"})) for n in range(12)]
    ClaimDay.objects.create(day=timezone.localdate(), claims=1000)  # drift the reconcile runs into

    jobs = iter(range(16))

    def work(barrier):
        job = next(jobs)
        if job < 12:
            context = claims.claim_context_for(payload=payloads[job])
            nonce = claims.new_claim_nonce()
            barrier.wait(timeout=30)
            return claims.claim_submit(context=context, answers={}, nonce=nonce)
        barrier.wait(timeout=30)
        return reconcile_dashboard_counts()

    _, errors = run_at_a_barrier(16, work)

    assert errors == []
    assert kept_claim_days() == raw_claim_days() == {timezone.localdate(): 12}
    assert kept_status_counts() == raw_status_counts()


SQLITE_COUNTS = """
import uuid
from collections import Counter
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from members.models import Member, MemberStatusCount
from members.services.counts import member_status_counts_reconcile
from portal.selectors import members_by_status
from templates_sync.models import PassTemplate

call_command("migrate", verbosity=0)
now = timezone.now()
club = PassTemplate.objects.create(
    id=uuid.uuid4(), type="MEMBER", name="Club", status="ACTIVE", raw={}, content_hash="x",
    first_seen_at=now, changed_at=now,
)
for n in range(6):
    Member.objects.create(template=club, display_name=f"M {n}", source="manual", status="pending")
Member.objects.filter(display_name__in=["M 0", "M 1"]).update(status="issued")
with connection.cursor() as cursor:
    cursor.execute("UPDATE members_member SET status = 'failed' WHERE display_name = 'M 2'")
Member.objects.filter(display_name="M 3").delete()
kept = {row.status: row.members for row in MemberStatusCount.objects.all() if row.members}
print(kept == dict(Counter(Member.objects.values_list("status", flat=True))), sorted(kept.items()))
print(dict(members_by_status())["Pending"], member_status_counts_reconcile())
"""


@pytest.mark.slow
def test_status_counts_are_kept_on_sqlite_too(tmp_path):
    printed = run_on_sqlite(SQLITE_COUNTS, tmp_path)
    assert printed == ["True [('failed', 1), ('issued', 2), ('pending', 2)]", "2 0"]
