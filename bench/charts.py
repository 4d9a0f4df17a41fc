"""Benchmark: the chart queries of the dashboard and the batch page on a large table, on PostgreSQL.

Fills a throw-away database with CLAIMS claims spread over 90 days and 100 batches and MEMBERS members (made
with generate_series), runs VACUUM ANALYZE, then times, each the median of --repeat runs:
  - baseline: a bare COUNT(*) of the claims of the last 30 days (the least work that reads that range);
  - claims per day, last 30 days (the dashboard): `links.selectors.link_claims_per_day()`;
  - claims per day of one batch (the batch page);
  - members by status (one GROUP BY) and the "stuck" counts (pending/failed older than an hour).
and prints the plans' top lines, so the index each query uses is visible.

    .venv/bin/python bench/charts.py [--claims 1000000] [--members 1000000] [--repeat 5]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

from _db import ROOT, mirror_template, setup_django

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(ROOT))

DATABASE = "smartpass_bench_charts"


def _median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup_django(DATABASE)

    from django.db import connection
    from django.utils import timezone

    from links.models import LinkClaim
    from links.selectors import link_claims_per_day
    from portal.selectors import members_by_status, stuck_members

    template = mirror_template("Bench")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO links_linkclaim (template_id, batch_id, row, outcome, at) "
            "SELECT %s, 1 + i %% 100, i, CASE WHEN i %% 4 = 0 THEN 'existing' ELSE 'new' END, "
            "now() - (random() * interval '90 days') FROM generate_series(1, %s) AS i",
            [template.pk, args.claims],
        )
        cursor.execute(
            "INSERT INTO members_member (template_id, external_id, values, display_name, email, phone, source, "
            "status, failure_reason, upstream_conflict, upstream, issue_attempts, last_error, created_at, updated_at, "
            "pass_link_needed, autofill_excluded, search_text) "
            "SELECT %s, NULL, '{}', 'Member ' || i, '', '', 'link', "
            "(ARRAY['issued','issued','issued','issued','issued','issued','issued','pending','failed','voided'])"
            "[1 + i %% 10], '', false, '{}', 0, '', now() - (random() * interval '90 days'), now(), "
            "false, false, 'member ' || i FROM generate_series(1, %s) AS i",
            [template.pk, args.members],
        )
        # What autovacuum does on a live database: statistics, and the visibility map for index-only scans.
        cursor.execute("VACUUM ANALYZE links_linkclaim")
        cursor.execute("VACUUM ANALYZE members_member")
    print(f"{args.claims:,} claims and {args.members:,} members written in {time.perf_counter() - started:.1f} s")

    since = timezone.now() - timezone.timedelta(days=30)

    def bare_count():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM links_linkclaim WHERE at >= %s", [since])
            cursor.fetchone()

    measured = {
        "baseline: COUNT(*) of 30 days of claims": _median_seconds(bare_count, args.repeat),
        "claims per day, last 30 days (dashboard)": _median_seconds(link_claims_per_day, args.repeat),
        "claims per day of one batch (batch page)": _median_seconds(
            lambda: link_claims_per_day(batch_id=7), args.repeat
        ),
        "members by status (dashboard)": _median_seconds(members_by_status, args.repeat),
        "pending/failed older than an hour": _median_seconds(stuck_members, args.repeat),
    }
    baseline = measured["baseline: COUNT(*) of 30 days of claims"]
    print(f"median of {args.repeat} runs")
    for name, seconds in measured.items():
        print(f"{name:45s} {seconds * 1000:8.1f} ms   ratio {seconds / baseline:5.2f}")

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


if __name__ == "__main__":
    main()
