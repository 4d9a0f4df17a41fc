"""Benchmark: the chart queries of the dashboard and the batch page on a large table, on PostgreSQL.

Fills a throw-away database with CLAIMS claims spread over 90 days and 100 batches and MEMBERS members (made
with generate_series; the claims straight into their table, so the daily roll-up is filled by its reconcile
job, which is timed), runs VACUUM ANALYZE, then times, each the median of --repeat runs:
  - baseline: a bare COUNT(*) of the claims of the last 30 days (the least work that reads that range);
  - the dashboard's three charts as they were (GROUP BY over the claims and over the members) and as they are
    (the counts kept per day and per status: ClaimDay, MemberStatusCount), and the whole dashboard request
    (server-side, Django's test client) each way, in the same run;
  - claims per day of one batch (the batch page).
and prints the plans' top lines, so the index each query uses is visible.

    .venv/bin/python bench/charts.py [--claims 1000000] [--members 1000000] [--repeat 5] [--database NAME] [--keep]

PostgreSQL on 127.0.0.1:5432 (BENCH_PG) and Redis (CELERY_BROKER_URL, default redis://127.0.0.1:6379/14: the
cache the dashboard's login is recorded in, as in production).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from _db import ROOT, mirror_template, setup_django

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(ROOT))

DATABASE = "smartpass_bench_charts"


def _median_seconds(function, repeat: int) -> tuple[float, float]:
    """(median wall seconds, CPU seconds per run): this process's plus its PostgreSQL backend's (/proc), which
    other work on the machine inflates far less than the wall time."""
    from django.db import connection

    function()  # warm: plans cached, the connection open
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    times, cpu = [], time.process_time() + _backend_cpu(backend)
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() + _backend_cpu(backend) - cpu) / repeat
    return statistics.median(times), cpu


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the PostgreSQL backend `pid` used so far (same machine only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default=DATABASE, help="the throw-away database (dropped and made again)")
    parser.add_argument("--keep", action="store_true", help="reuse the claims and members an earlier run wrote")
    args = parser.parse_args()
    load_before = os.getloadavg()
    # A Redis cache, as in production (and as bench/members.py): with the embedded mode's file cache, django-axes
    # records the dashboard's login in the database with the client's IP address, which force_login lacks.
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
    kept = setup_django(args.database, keep=args.keep)

    from django.db import connection
    from django.utils import timezone

    from links.models import LinkClaim
    from links.selectors import link_claims_per_day
    from links.services.claim_days import claim_days_reconcile
    from members.services.counts import member_status_counts_reconcile
    from portal import selectors as dashboard
    from portal.selectors import members_by_status, stuck_members

    if kept:
        print("kept the claims and members an earlier run wrote (--keep)")
    else:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            _fill(cursor, args)
        print(f"{args.claims:,} claims and {args.members:,} members written in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    wrong_days = claim_days_reconcile()
    reconcile_days = time.perf_counter() - started
    started = time.perf_counter()
    wrong_statuses = member_status_counts_reconcile()
    reconcile_statuses = time.perf_counter() - started
    print(
        f"reconcile job: claim days {reconcile_days:.2f} s ({wrong_days} days filled or set right: the claims were "
        f"written straight to their table), member status counts {reconcile_statuses:.2f} s ({wrong_statuses} "
        "wrong: the triggers counted the members as they were inserted)"
    )

    since = timezone.now() - timezone.timedelta(days=30)

    def bare_count():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM links_linkclaim WHERE at >= %s", [since])
            cursor.fetchone()

    before = _charts_before()
    charts_now = {"claims per day": link_claims_per_day, "members by status": members_by_status, "stuck": stuck_members}
    # The same answers both ways (the kept counts are exact after the reconcile).
    assert before["claims per day"]() == link_claims_per_day()
    assert before["members by status"]() == members_by_status() and before["stuck"]() == stuck_members()

    request = _dashboard_request()
    with connection.cursor() as cursor:
        # Parallel workers are processes of their own: their CPU would be missing from the backend's.
        cursor.execute("SET max_parallel_workers_per_gather = 0")
    measured = {"baseline: COUNT(*) of 30 days of claims": _median_seconds(bare_count, args.repeat)}
    for name in charts_now:
        measured[f"{name}, before (GROUP BY)"] = _median_seconds(before[name], args.repeat)
        measured[f"{name}, now (kept counts)"] = _median_seconds(charts_now[name], args.repeat)
    with _selectors(dashboard, before):
        measured["dashboard request, before"] = _median_seconds(request, args.repeat)
    measured["dashboard request, now"] = _median_seconds(request, args.repeat)
    measured["claims per day of one batch (batch page)"] = _median_seconds(
        lambda: link_claims_per_day(batch_id=7), args.repeat
    )
    baseline, baseline_cpu = measured["baseline: COUNT(*) of 30 days of claims"]
    load_after = os.getloadavg()
    print(
        f"median of {args.repeat} runs (CPU: this process + its PostgreSQL backend, per run); load average "
        f"(1, 5 min) before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} "
        f"{load_after[1]:.2f} ({os.cpu_count()} CPUs)"
    )
    print(f"{'':45s} {'wall ms':>9s} {'ratio':>6s} {'CPU ms':>8s} {'ratio':>6s}")
    for name, (seconds, cpu) in measured.items():
        print(f"{name:45s} {seconds * 1000:9.1f} {seconds / baseline:6.2f} {cpu * 1000:8.1f} {cpu / baseline_cpu:6.2f}")
    now_total = sum(measured[f"{name}, now (kept counts)"][0] for name in charts_now)
    before_total = sum(measured[f"{name}, before (GROUP BY)"][0] for name in charts_now)
    request, request_cpu = measured["dashboard request, now"]
    print(
        f"the three charts: before {before_total * 1000:.1f} ms, now {now_total * 1000:.1f} ms; "
        f"goal: the dashboard < 50 ms: {'met' if request < 0.05 else 'NOT met'} by wall time "
        f"({request * 1000:.1f} ms), {'met' if request_cpu < 0.05 else 'NOT met'} by CPU ({request_cpu * 1000:.1f} ms)"
    )

    from django.db.models import Count
    from django.db.models.functions import TruncDate

    day_query = (
        LinkClaim.objects.filter(at__gte=since, batch_id=7)
        .order_by()
        .annotate(day=TruncDate("at"))
        .values("day")
        .annotate(n=Count("*"))
    )
    with connection.cursor() as cursor:
        for label, sql, params in (
            ("plan, one batch's days", *day_query.query.sql_with_params()),
            ("plan, 30 days", "SELECT count(*) FROM links_linkclaim WHERE at >= %s", (since,)),
        ):
            cursor.execute("EXPLAIN " + sql, params)
            print(label + ":", " / ".join(row[0].strip() for row in cursor.fetchall()[:4]))


def _fill(cursor, args) -> None:
    template = mirror_template("Bench")
    cursor.execute(
        "INSERT INTO links_linkclaim (template_id, batch_id, row, outcome, at) "
        "SELECT %s, 1 + i %% 100, i, CASE WHEN i %% 4 = 0 THEN 'existing' ELSE 'new' END, "
        "now() - (random() * interval '90 days') FROM generate_series(1, %s) AS i",
        [template.pk, args.claims],
    )
    cursor.execute(
        "INSERT INTO members_member (template_id, external_id, values, pass_values, display_name, email, phone, source, "
        "status, failure_reason, upstream_conflict, upstream, issue_attempts, last_error, created_at, updated_at, "
        "pass_link_needed, autofill_excluded, search_text) "
        "SELECT %s, NULL, '{}', '{}', 'Member ' || i, '', '', 'link', "
        "(ARRAY['issued','issued','issued','issued','issued','issued','issued','pending','failed','voided'])"
        "[1 + i %% 10], '', false, '{}', 0, '', now() - (random() * interval '90 days'), now(), "
        "false, false, 'member ' || i FROM generate_series(1, %s) AS i",
        [template.pk, args.members],
    )
    # What autovacuum does on a live database: statistics, and the visibility map for index-only scans.
    cursor.execute("VACUUM ANALYZE links_linkclaim")
    cursor.execute("VACUUM ANALYZE members_member")


def _charts_before() -> dict:
    """The dashboard's three charts as they were before the kept counts: GROUP BY over claims and members."""
    from datetime import datetime, time, timedelta

    from django.db.models import Count
    from django.db.models.functions import TruncDate
    from django.utils import timezone

    from links.models import LinkClaim
    from members.models import Member
    from portal.selectors import STUCK_AFTER

    def claims_per_day(days: int = 30):
        today = timezone.localdate()
        first_day = today - timedelta(days=days - 1)
        claims = LinkClaim.objects.filter(at__gte=timezone.make_aware(datetime.combine(first_day, time.min)))
        by_day = claims.order_by().annotate(day=TruncDate("at")).values("day").annotate(n=Count("*"))
        counts = dict(by_day.values_list("day", "n"))
        return [(day, counts.get(day, 0)) for day in (first_day + timedelta(days=i) for i in range(days))]

    def members_by_status():
        counts = dict(Member.objects.order_by().values_list("status").annotate(n=Count("*")))
        return [(label, counts.get(value, 0)) for value, label in Member.Status.choices]

    def stuck():
        cutoff = timezone.now() - STUCK_AFTER
        statuses = [Member.Status.PENDING, Member.Status.FAILED]
        rows = Member.objects.filter(status__in=statuses, created_at__lt=cutoff)
        counts = dict(rows.order_by().values_list("status").annotate(n=Count("*")))
        return {status: counts.get(status, 0) for status in statuses}

    return {"claims per day": claims_per_day, "members by status": members_by_status, "stuck": stuck}


class _selectors:
    """The dashboard's selectors swapped for `charts` inside the block (the dashboard request as it was)."""

    NAMES = {
        "claims per day": "link_claims_per_day",
        "members by status": "members_by_status",
        "stuck": "stuck_members",
    }

    def __init__(self, module, charts: dict):
        self.module, self.charts, self.saved = module, charts, {}

    def __enter__(self):
        for key, name in self.NAMES.items():
            self.saved[name] = getattr(self.module, name)
            setattr(self.module, name, self.charts[key])

    def __exit__(self, *exc_info):
        for name, function in self.saved.items():
            setattr(self.module, name, function)


def _dashboard_request():
    """A function that GETs the dashboard as a logged-in admin and checks it answered, server-side."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    user = get_user_model().objects.filter(username="bench").first()
    user = user or get_user_model().objects.create_superuser("bench", password="bench-password-123")
    client = Client()
    client.force_login(user)
    url = reverse("dashboard")

    def request():
        response = client.get(url)
        assert response.status_code == 200, response.status_code

    request()  # warm: templates compiled, session read once
    return request


if __name__ == "__main__":
    main()
