"""Benchmark: what the recovery sweep costs when it has nothing to do, the state it is in nearly always.

Beat sends every sweep of settings.RECOVERY_SWEEPS as a task every SWEEP_INTERVAL (10 s). This seeds a database
with --members members (bench/members.py's data: issued, failed and pending members over 10 templates) and
finished link batches, syncs and refresh runs, then runs each sweep --repeat times in this process and reports,
per sweep, the queries it makes and its median wall time, and the sum: the database work one SWEEP_INTERVAL
costs when no worker died and no task was lost.

    .venv/bin/python bench/sweep.py [--members 100000] [--repeat 30]

Uses the throw-away database smartpass_liveness_sweep (BENCH_PG, default postgres@127.0.0.1:5432).
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]  # see bench/members.py
sys.path.insert(0, str(_BENCH_DIR))
from _db import ROOT, setup_django  # noqa: E402

os.chdir(ROOT)


def _bench_members():
    spec = importlib.util.spec_from_file_location("bench_members", _BENCH_DIR / "members.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_finished_work(batches: int) -> None:
    """Finished runs of every kind, so that each sweep's query has rows to pass over."""
    from django.utils import timezone

    from links.models import LinkBatch, LinkChunk
    from members.models import MemberRefreshRun
    from templates_sync.models import PassTemplate, SyncRun

    now = timezone.now()
    template = PassTemplate.objects.first()
    SyncRun.objects.bulk_create(
        SyncRun(status="succeeded", trigger="beat", started_at=now, finished_at=now, heartbeat_at=now)
        for _ in range(batches)
    )
    MemberRefreshRun.objects.bulk_create(
        MemberRefreshRun(status="succeeded", trigger="beat", started_at=now, finished_at=now) for _ in range(batches)
    )
    made = LinkBatch.objects.bulk_create(
        LinkBatch(
            template=template,
            original_name=f"campaign-{n}.csv",
            input_file=f"links/x/{n}/input.csv",
            output_file=f"links/x/{n}/output.csv",
            encoding="utf-8",
            delimiter=",",
            status="succeeded",
            finished_at=now,
        )
        for n in range(batches)
    )
    LinkChunk.objects.bulk_create(
        LinkChunk(batch=batch, index=i, start=0, row_before=0, status="done", heartbeat_at=now)
        for batch in made
        for i in range(5)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    setup_django("smartpass_liveness_sweep")
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from background.recovery import sweep_run

    _bench_members().seed(args.members, 10)
    seed_finished_work(args.batches)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    total_ms, total_queries = 0.0, 0
    print(f"{'sweep':<22} {'queries':>7} {'median ms':>10} {'max ms':>8}")
    for name in settings.RECOVERY_SWEEPS:
        sweep_run(name)  # warm: the first run imports the module
        times, queries = [], 0
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                result = sweep_run(name)
                times.append((time.perf_counter() - began) * 1000)
            queries = len(captured.captured_queries)
            assert not result or not any(result.values() if isinstance(result, dict) else [result]), (name, result)
        median = statistics.median(times)
        total_ms, total_queries = total_ms + median, total_queries + queries
        print(f"{name:<22} {queries:>7} {median:>10.2f} {max(times):>8.2f}")
    print(
        f"{'all (one interval)':<22} {total_queries:>7} {total_ms:>10.2f}    "
        f"every {settings.SWEEP_INTERVAL:g} s: {total_ms / (settings.SWEEP_INTERVAL * 1000) * 100:.2f} % of one core"
    )
    print(f"members {args.members:,}, finished link batches {args.batches:,} (5 chunks each), PostgreSQL")


if __name__ == "__main__":
    main()
