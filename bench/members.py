"""Benchmark: the staff member list, every kind of search and CSV export at 1,000,000 members on PostgreSQL.

Seeds the members with COPY into a throw-away database (indexes built after the load, as a restore would),
then times requests through the Django test client — server-side: URL routing, view, queries and template
rendering, no network — and reports the median of --repeat requests against the 50 ms goal, the queries per
page, and the CSV export's rows per second and peak Python memory. Goal: list pages and every kind of search
under 50 ms, query count independent of page size, flat memory on export.

The text searches are also timed as SQL alone, the way they are searched now and the way they were before
(the folded text through its trigram index only), in the same run: median wall time and the PostgreSQL
backend's CPU time (/proc), which other work on the machine inflates less.

    .venv/bin/python bench/members.py [--members 1000000] [--templates 20] [--repeat 15] [--database NAME]
"""

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _db import ROOT, mirror_template, setup_django

# This file is bench/members.py: with bench/ on sys.path, `import members` would find this script instead of
# the members app. Drop bench/ (after importing _db) and work from the repository root, because Celery puts
# the working directory on sys.path when the portal's app loads.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
os.chdir(ROOT)

DATABASE = "smartpass_bench_members"
FIRST = [
    "Guðrún",
    "Jón",
    "Anna",
    "Sigurður",
    "Kristín",
    "Gunnar",
    "Sigríður",
    "Ólafur",
    "Helga",
    "Einar",
    "Margrét",
    "Magnús",
    "Ingibjörg",
    "Stefán",
    "Sólveig",
    "Þórður",
    "Ásta",
    "Björn",
    "Katrín",
    "Ragnar",
    "Laura",
    "Percy",
    "Elín",
    "Hörður",
    "Hildur",
    "Páll",
    "Þóra",
    "Árni",
    "Auður",
    "Kári",
]
MIDDLE = ["", "", "", "Ýr", "Rós", "Már", "Þór", "Sif", "Örn", "Björk", "Freyr", "Lind", "Dögg", "Geir", "Ósk"]
LAST = [
    "Jónsdóttir",
    "Jónsson",
    "Sigurðardóttir",
    "Sigurðsson",
    "Guðmundsdóttir",
    "Guðmundsson",
    "Ólafsdóttir",
    "Ólafsson",
    "Einarsdóttir",
    "Einarsson",
    "Magnúsdóttir",
    "Magnússon",
    "Stefánsdóttir",
    "Stefánsson",
    "Pálsdóttir",
    "Pálsson",
    "Kristjánsdóttir",
    "Kristjánsson",
    "Björnsdóttir",
    "Björnsson",
    "Loopy",
    "PassKit",
    "Árnadóttir",
    "Árnason",
    "Gunnarsdóttir",
    "Gunnarsson",
    "Hauksdóttir",
    "Hauksson",
]


def seed(members: int, templates: int) -> dict:
    from django.db import connection

    from members.search_text import member_search_text
    from members.services.counts import template_member_counts_reconcile

    now = datetime.now(UTC)
    fields = [("name", "TEXT", True), ("email", "EMAIL", True), ("phone", "PHONE_NUMBER", False)]
    template_ids = []
    for n in range(templates):
        template = mirror_template(f"Félagskort {n}", fields)
        template_ids.append(str(template.pk))

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'members_member' AND indexname "
            "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'members_member'::regclass)"
        )
        secondary = cursor.fetchall()
        for name, _ in secondary:
            cursor.execute(f'DROP INDEX "{name}"')

    rng = random.Random(1)
    start = now - timedelta(days=365)
    step = timedelta(days=365) / members
    columns = (
        "template_id",
        "pass_id",
        "external_id",
        "values",
        "pass_values",
        "display_name",
        "email",
        "phone",
        "search_text",
        "source",
        "source_batch_id",
        "source_row",
        "status",
        "failure_reason",
        "upstream_conflict",
        "upstream",
        "issue_attempts",
        "last_error",
        "created_at",
        "updated_at",
        "autofill_excluded",
        "pass_link_needed",
    )
    sample = {}
    began = time.perf_counter()
    raw = connection.connection  # psycopg 3
    with raw.cursor() as cursor:
        with cursor.copy(f"COPY members_member ({', '.join(columns)}) FROM STDIN") as copy:
            for n in range(members):
                first, middle, last = rng.choice(FIRST), rng.choice(MIDDLE), rng.choice(LAST)
                name = " ".join(part for part in (first, middle, last) if part)
                # Mostly one domain (a common search), one in a thousand a rare one.
                domain = "passkit.example" if n % 1000 == 7 else ("simnet.is" if n % 3 else "example.is")
                email = f"{first.lower()}.{n}@{domain}"
                phone = f"+354{7700000 + n}" if n < 1_000_000 else ""  # valid Icelandic mobile numbers
                status = "issued" if n % 50 else ("failed" if n % 100 == 0 else "pending")
                pass_id = str(uuid.uuid4()) if status == "issued" else None
                created = start + step * n
                batch = n // 10_000 + 1 if n % 3 else None
                copy.write_row(
                    (
                        template_ids[n % templates],
                        pass_id,
                        email if n % 2 else None,
                        json.dumps({"name": name, "email": email, "phone": phone}, ensure_ascii=False),
                        "{}",
                        name,
                        email,
                        phone,
                        member_search_text(display_name=name, email=email),
                        "link" if batch else "manual",
                        batch,
                        (n % 10_000) + 1 if batch else None,
                        status,
                        "",
                        False,
                        json.dumps({"id": pass_id}) if pass_id else "{}",
                        1,
                        "",
                        created,
                        created,
                        False,
                        False,
                    )
                )
                if n == members // 2 + 1:  # an issued member with every field
                    sample = {
                        "email": email,
                        "phone": phone,
                        "pass_id": pass_id,
                        "name": name,
                        "external_id": email,
                        "local_part": email.split("@")[0],
                    }
    raw.commit()
    copied = time.perf_counter() - began
    began = time.perf_counter()
    with connection.cursor() as cursor:
        for _, definition in secondary:
            cursor.execute(definition)
        cursor.execute("VACUUM ANALYZE members_member")
    indexed = time.perf_counter() - began
    began = time.perf_counter()
    template_member_counts_reconcile()  # what the refresh job does: the kept counts from a real count
    reconciled = time.perf_counter() - began
    sample["template"] = template_ids[0]
    return {"sample": sample, "copy_seconds": copied, "index_seconds": indexed, "reconcile_seconds": reconciled}


def seeded_before(members: int) -> dict:
    """The sample `seed` picked, read back from the members an earlier run seeded (ids count from 1)."""
    from members.models import Member

    found = Member.objects.count()
    if found != members:
        raise SystemExit(f"--keep: the database holds {found:,} members, not {members:,}; run without --keep")
    member = Member.objects.get(pk=members // 2 + 2)
    email = member.email
    sample = {"email": email, "phone": member.phone, "pass_id": str(member.pass_id), "name": member.display_name}
    first_template = Member.objects.values_list("template_id", flat=True).get(pk=1)  # the seed's first template
    sample |= {"external_id": email, "local_part": email.split("@")[0], "template": str(first_template)}
    return {"sample": sample}


def timed(client, url: str, params: dict, repeat: int) -> tuple[float, float, int, int]:
    """(median ms, CPU ms per request, queries, rows shown) of GET url through the test client. CPU = this
    process's (routing, view, rendering) plus its PostgreSQL backend's (the queries): what load on the machine
    inflates far less than wall time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url, params)  # warm caches (plans, templates)
    backend = _backend_pid(connection)
    times, cpu = [], time.process_time() + _backend_cpu(backend)
    for _ in range(repeat):
        began = time.perf_counter()
        response = client.get(url, params)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.status_code
    cpu = (time.process_time() + _backend_cpu(backend) - cpu) * 1000 / repeat
    assert _backend_pid(connection) == backend, "the test client kept its database connection"
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    rows = len(response.context["page"].object_list) if response.context and "page" in response.context else 0
    return statistics.median(times), cpu, len(queries.captured_queries), rows


def _backend_pid(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def export(client, params: dict, *, trace: bool) -> tuple[int, float, float]:
    """(rows, seconds, peak MiB of Python allocations or 0)."""
    from django.urls import reverse

    if trace:
        tracemalloc.start()
    began = time.perf_counter()
    response = client.get(reverse("members:member_export"), params)
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - began
    peak = 0.0
    if trace:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return lines - 1, seconds, peak


def count_baseline(repeat: int) -> tuple[float, float]:
    """(ms, ms): the template list's member counts as they were read before (a correlated COUNT(*) over the
    members per template) and as they are now (the kept count row per template), in the same run."""
    from django.db.models import Count, IntegerField, OuterRef, Subquery

    from members.models import Member, TemplateMemberCount
    from templates_sync.models import PassTemplate

    counting = Member.objects.filter(template=OuterRef("pk")).order_by().values("template").annotate(n=Count("*"))
    kept = TemplateMemberCount.objects.filter(template=OuterRef("pk")).values("members")[:1]
    medians = []
    for subquery in (counting.values("n"), kept):
        query = PassTemplate.objects.annotate(member_count=Subquery(subquery, output_field=IntegerField()))[:50]
        list(query.values_list("pk", "member_count"))  # warm
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            list(query.values_list("pk", "member_count"))
            times.append((time.perf_counter() - began) * 1000)
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--templates", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database", default=DATABASE, help="the throw-away database (dropped and made again)")
    parser.add_argument("--keep", action="store_true", help="reuse the database an earlier run seeded, as it is")
    parser.add_argument("--parallel", action="store_true", help="let PostgreSQL run parallel workers (see below)")
    parser.add_argument("--no-export", action="store_true", help="skip the CSV export (about a minute)")
    args = parser.parse_args()

    # A Redis cache, as in production: with the file cache of the embedded mode, django-axes records each login
    # in the database with the client's IP address, which the test client's force_login does not have.
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
    kept = setup_django(args.database, keep=args.keep)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse

    from members.search_text import fold

    setup_test_environment()  # so responses carry their template context (rows shown)
    if kept:
        seeded = seeded_before(args.members)
        print(f"kept the {args.members:,} members seeded by an earlier run (--keep)")
    else:
        seeded = seed(args.members, args.templates)
        print(
            f"seeded {args.members:,} members: COPY {seeded['copy_seconds']:.1f} s, "
            f"indexes + analyze {seeded['index_seconds']:.1f} s, member counts reconciled "
            f"{seeded['reconcile_seconds']:.1f} s"
        )
    sample = seeded["sample"]
    user = get_user_model().objects.filter(username="bench").first()
    user = user or get_user_model().objects.create_superuser("bench", password="bench-password-123")
    client = Client()
    client.force_login(user)
    if not args.parallel:
        # Parallel workers are processes of their own: their CPU time would be missing from the backend's.
        with connection.cursor() as cursor:
            cursor.execute("SET max_parallel_workers_per_gather = 0")
    member_list = reverse("members:member_list")
    first_name = sample["name"].split()[0]
    cases = [
        ("list, first page (50 rows)", {}),
        ("list, first page, 200 rows", {"per_page": "200"}),
        ("list, page 500", {"page": "500"}),
        ("list, one template, page 1", {"template": sample["template"]}),
        ("list, status=failed, page 1", {"status": "failed"}),
        ("list, sorted by name, page 1", {"sort": "name"}),
        ("search, rare full name, as written (1 in 11,000)", {"q": sample["name"]}),
        ("search, rare full name typed without accents", {"q": fold(sample["name"])}),
        (f"search, common first name ('{first_name}', 1 in 30)", {"q": first_name}),
        ("search, common first + last name ('jon jonsson', 1 in 4,000)", {"q": "jon jonsson"}),
        ("search, name fragment ('orn sig')", {"q": "orn sig"}),
        ("search, name fragment ('dóttir', half the members)", {"q": "dóttir"}),
        ("search, email local part", {"q": sample["local_part"]}),
        ("search, whole email (typed in capitals)", {"q": " " + sample["email"].upper()}),
        ("search, rare email domain ('passkit.example', 1 in 1,000)", {"q": "passkit.example"}),
        ("search, rare email domain typed '@passkit.example'", {"q": "@passkit.example"}),
        ("search, common email domain ('simnet.is', 2 in 3)", {"q": "simnet.is"}),
        ("search, Pass ID", {"q": sample["pass_id"]}),
        ("search, Pass ID prefix (8 hex, as the list shows)", {"q": sample["pass_id"][:8]}),
        ("search, Pass ID in capitals without dashes", {"q": sample["pass_id"].replace("-", "").upper()}),
        ("search, phone ending, 6 digits (also tried as a Pass ID prefix)", {"q": sample["phone"][-6:]}),
        ("search, phone ending, 4 digits", {"q": sample["phone"][-4:]}),
        ("search, External ID", {"q": sample["external_id"]}),
        ("search, External ID typed in capitals", {"q": sample["external_id"].upper()}),
        ("search, phone typed '00354 …'", {"q": "00354 " + sample["phone"][4:7] + " " + sample["phone"][7:]}),
        ("search, phone typed '…-…' (no country code)", {"q": sample["phone"][4:7] + "-" + sample["phone"][7:]}),
        ("search, one rare word of common trigrams ('sigurdurdottir', no hits)", {"q": "sigurdurdottir"}),
        ("search, nothing matches ('zzqx')", {"q": "zzqx"}),
        ("search, nothing matches ('zzqx yyqz')", {"q": "zzqx yyqz"}),
    ]
    print(f"\nload average at the start: {_load()}")
    print(
        "\n| request | median ms | CPU ms | CPU < 50 ms | queries | rows |\n| --- | ---: | ---: | :---: | ---: | ---: |"
    )
    for label, params in cases:
        median, cpu, queries, rows = timed(client, member_list, params, args.repeat)
        print(f"| {label} | {median:.1f} | {cpu:.1f} | {'yes' if cpu < 50 else '**no**'} | {queries} | {rows} |")
    for label, url in (
        ("dashboard", reverse("dashboard")),
        ("template list (member counts)", reverse("template_list")),
    ):
        median, cpu, queries, _ = timed(client, url, {}, max(3, args.repeat // 3))
        print(f"| {label} | {median:.1f} | {cpu:.1f} | {'yes' if cpu < 50 else '**no**'} | {queries} | – |")
    print(f"\nload average after the requests: {_load()}")
    sql_alone([params["q"] for label, params in cases if label.startswith("search, ") and _is_text(params["q"])], args)

    counted, kept = count_baseline(args.repeat)
    print(
        f"\nmember counts of the 20 templates, the query alone (median of {args.repeat}): counting the members "
        f"{counted:.1f} ms (before), kept counts {kept:.1f} ms (now)"
    )

    if args.no_export:
        return
    rows, seconds, _ = export(client, {}, trace=False)
    print(f"\nexport, all members: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s")
    small_rows, _, small_peak = export(client, {"template": sample["template"], "status": "issued"}, trace=True)
    rows, _, peak = export(client, {}, trace=True)
    print(
        f"export peak Python memory (tracemalloc): {small_rows:,} rows {small_peak:.1f} MiB; {rows:,} rows {peak:.1f} MiB"
    )


def _load() -> str:
    return " ".join(f"{n:.2f}" for n in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def _is_text(query: str) -> bool:
    """Whether the search box searches `query` in the folded text (not an address, phone or Pass ID)."""
    from members.selectors import member_search_condition

    return "search_text" in str(member_search_condition(query))


def sql_alone(queries: list[str], args) -> None:
    """Each text search's page query as SQL alone: now (members.selectors) and before (the folded text through
    its trigram index only), alternating, with the PostgreSQL backend's CPU time read from /proc."""
    from django.db import connection

    from members.search_text import search_key
    from members.selectors import MemberFilters, member_list

    before_sql = (
        "SELECT id FROM members_member WHERE (UPPER(external_id) = UPPER(%s) OR search_text LIKE %s) "
        "ORDER BY created_at DESC, id DESC LIMIT 51"
    )
    backend = _backend_pid(connection)
    print(
        f"\nThe text searches' page query as SQL alone (median of {args.repeat}; CPU = the PostgreSQL backend's "
        "user + system time per query):\n\n| search | now ms | now CPU ms | before ms | before CPU ms | plan now |"
        "\n| --- | ---: | ---: | ---: | ---: | --- |"
    )
    for query in queries:
        now_sql, now_params = member_list(filters=MemberFilters(q=query)).values_list("id")[:51].query.sql_with_params()
        like = "%" + search_key(query).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        runs = {"now": (now_sql, now_params), "before": (before_sql, [query, like])}
        figures = {}
        with connection.cursor() as cursor:
            for name, (sql, params) in runs.items():
                cursor.execute(sql, params)  # warm
                times, cpu = [], _backend_cpu(backend)
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    cursor.execute(sql, params)
                    cursor.fetchall()
                    times.append((time.perf_counter() - began) * 1000)
                figures[name] = (statistics.median(times), (_backend_cpu(backend) - cpu) * 1000 / args.repeat)
            cursor.execute("EXPLAIN " + now_sql, now_params)
            plan = " / ".join(_plan_node(row[0]) for row in cursor.fetchall() if "Scan" in row[0])
        print(
            f"| {query} | {figures['now'][0]:.1f} | {figures['now'][1]:.1f} | {figures['before'][0]:.1f} | "
            f"{figures['before'][1]:.1f} | {plan} |"
        )
    print(f"\nload average at the end: {_load()}")


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the PostgreSQL backend `pid` used so far (same machine only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _plan_node(line: str) -> str:
    match = re.search(r"(\w[\w ]*Scan)(?: using (\w+))?(?: on (\w+))?", line)
    return " ".join(part for part in match.groups() if part) if match else line.strip()


if __name__ == "__main__":
    main()
