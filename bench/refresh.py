"""Benchmark: the member refresh job over 100,000 members against the sandbox, in real Celery workers.

Seeds --members issued members whose passes exist in the SmartPages sandbox (started in this process, on a
free port; it records when each request arrived), starts --workers Celery worker processes (pool of
--concurrency each) with MEMBER_REFRESH_RATE=--rate, starts one refresh run and waits for it. Reports, from
the sandbox's request times: the achieved rate, the most requests in any one-second window (goal: never
above the rate, whatever the number of workers), the wall time against members ÷ rate (goal: about equal),
and — as the baseline, in the same run — the bare rate of one process reading passes as fast as it can.

    .venv/bin/python bench/refresh.py [--members 100000] [--rate 500] [--workers 2] [--concurrency 4]

Uses the throw-away database smartpass_bench_refresh, the broker CELERY_BROKER_URL (default
redis://127.0.0.1:6379/12) and the cache CACHE_REDIS_URL (default redis://127.0.0.1:6379/13).
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _db import ROOT, setup_django

_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]  # see bench/members.py
os.chdir(ROOT)

DATABASE = "smartpass_bench_refresh"
KEY_ID, KEY_TOKEN = "bench", "bench-secret"


def serve_sandbox(conn, members: int) -> None:
    """The sandbox in a process of its own (as the real upstream is: it must not share this process's GIL).
    Answers over `conn`: its URL, template and pass ids first, then "times" and "reset" until "stop"."""
    from sandbox import SmartPagesSandbox

    sandbox = SmartPagesSandbox(templates=1, key_id=KEY_ID, key_token=KEY_TOKEN).start()
    template_id = sandbox.template_ids()[0]
    conn.send((sandbox.url, template_id, sandbox.add_passes(template_id, members)))
    while (command := conn.recv()) != "stop":
        if command == "reset":
            sandbox.reset_counts()
            conn.send(None)
        else:
            conn.send(sorted(sandbox.request_times("GET", "/api/v1/pass/")))
    sandbox.stop()


def seed(template_id: str, pass_ids: list[str]) -> None:
    """Mirror the sandbox template and COPY one issued member per pass the sandbox holds."""
    import orjson
    from django.db import connection

    from members.search_text import member_search_text
    from members.services.counts import template_member_counts_reconcile
    from templates_sync import sync

    assert sync.template_refresh(template_id=template_id).status == "succeeded"
    now = datetime.now(UTC)
    columns = (
        "template_id",
        "pass_id",
        "values",
        "display_name",
        "email",
        "phone",
        "search_text",
        "source",
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
    with connection.connection.cursor() as cursor:
        with cursor.copy(f"COPY members_member ({', '.join(columns)}) FROM STDIN") as copy:
            for n, pass_id in enumerate(pass_ids):
                name = f"Holder {n}"
                copy.write_row(
                    (
                        template_id,
                        pass_id,
                        orjson.dumps({"name": name}).decode(),
                        name,
                        "",
                        "",
                        member_search_text(display_name=name, email=""),
                        "link",
                        "issued",
                        "",
                        False,
                        "{}",
                        1,
                        "",
                        now,
                        now,
                        False,
                        False,
                    )
                )
    connection.connection.commit()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE members_member")
    template_member_counts_reconcile()


def bare_rate(url: str, pass_ids: list[str], seconds: float = 5.0) -> float:
    """Passes read per second by one process with one session, nothing else: what one client can do here."""
    from templates_sync.client import SmartPagesClient

    done, began = 0, time.perf_counter()
    with SmartPagesClient(base_url=url, key_id=KEY_ID, key_token=KEY_TOKEN) as client:
        while time.perf_counter() - began < seconds:
            client.get_pass(pass_ids[done % len(pass_ids)])
            done += 1
    return done / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=200)
    args = parser.parse_args()

    broker = os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
    os.environ.setdefault("CACHE_REDIS_URL", "redis://127.0.0.1:6379/13")
    os.environ["MEMBER_REFRESH_RATE"], os.environ["MEMBER_REFRESH_CHUNK"] = str(args.rate), str(args.chunk)
    setup_django(DATABASE)
    from django.conf import settings

    from background.rate_limit import most_in_one_second
    from members.models import MemberRefreshRun
    from members.services import refresh

    began = time.perf_counter()
    conn, child_conn = multiprocessing.Pipe()
    sandbox = multiprocessing.Process(target=serve_sandbox, args=(child_conn, args.members), daemon=True)
    sandbox.start()
    url, template_id, pass_ids = conn.recv()
    settings.SMARTPAGES_API_URL, settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = url, KEY_ID, KEY_TOKEN
    seed(template_id, pass_ids)
    print(f"seeded {args.members:,} members and their passes in {time.perf_counter() - began:.1f} s")
    print(
        f"bare loop (one process, one session, GET /api/v1/pass/{{id}} back to back): "
        f"{bare_rate(url, pass_ids[:5000]):,.0f} req/s"
    )

    env = dict(
        os.environ,
        SMARTPAGES_API_URL=url,
        SMARTPAGES_KEY_ID=KEY_ID,
        SMARTPAGES_KEY_TOKEN=KEY_TOKEN,
        DJANGO_SETTINGS_MODULE="portal.settings_test",
    )
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "portal", "purge", "-f"], env=env, check=True, capture_output=True
    )
    logs = [open(f"/tmp/bench-refresh-worker-{n}.log", "w") for n in range(args.workers)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={args.concurrency}",
                "--without-mingle",
                "--without-gossip",
                "-n",
                f"bench-refresh-{n}-{os.getpid()}@%h",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for n, log in enumerate(logs)
    ]
    try:
        time.sleep(8)  # the workers start
        conn.send("reset")
        conn.recv()
        started = time.perf_counter()
        run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.COMMAND)
        while not run.is_finished:
            time.sleep(1)
            run.refresh_from_db()
        wall = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    conn.send("times")
    times = conn.recv()
    conn.send("stop")
    sandbox.join(timeout=10)
    span = times[-1] - times[0]
    expected = args.members / args.rate
    print(
        f"\nrun #{run.pk}: {run.status}, checked {run.checked:,}, changed {run.changed:,}, errors {run.errors:,}, "
        f"{run.chunks_total} chunks over {args.workers} workers × {args.concurrency} processes (broker {broker})"
    )
    print(f"configured rate                      {args.rate:8.1f} req/s")
    achieved = len(times) / span
    print(f"achieved rate (requests ÷ their span) {achieved:8.1f} req/s   ({achieved / args.rate:.3f} × the rate)")
    print(f"most requests in any 1 s window       {most_in_one_second(times):8d}       (goal ≤ {args.rate:.0f} + 1)")
    print(f"wall time, run start to finish        {wall:8.1f} s     members ÷ rate = {expected:.1f} s", end="")
    print(f"   ratio {wall / expected:.3f}")


if __name__ == "__main__":
    main()
