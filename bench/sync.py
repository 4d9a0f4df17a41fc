"""Benchmark: a full template sync against a bare fetch of the same pages, in the same run.

10,000 templates in the sandbox, page size 100, PostgreSQL. Prints the bare loop's time (requests +
json, nothing else), the first full sync into an empty mirror (10,000 inserts) as it was and with each
step that made it faster, an unchanged re-sync, their ratios to the bare loop (goals: first sync <= 2x,
unchanged re-sync <= 1.25x), database statements per page, and rows written by the unchanged re-sync as
PostgreSQL counts them (goal: 0). Each timing is the median of --repeat interleaved runs.

    .venv/bin/python bench/sync.py [--templates 10000] [--repeat 3] [--now-only]
"""

import argparse
import base64
import statistics
import time
from pathlib import Path

from _db import setup_django


def bare_fetch(url: str, key_id: str, key_token: str, page_size: int) -> int:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + base64.b64encode(f"{key_id}:{key_token}".encode()).decode()
    page, items = 0, 0
    while True:
        body = session.get(
            f"{url}/api/v1/pass-template", params={"page": page, "page_size": page_size}, timeout=30
        ).json()
        items += len(body["data"])
        page += 1
        if page >= body["totalPages"]:
            return items


class SandboxProcess:
    """The upstream in a process of its own, as the real one is: its work must not share our GIL."""

    def __init__(self, templates: int):
        import socket
        import subprocess
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        code = (
            "from templates_sync.sandbox import SmartPagesSandbox; "
            f"SmartPagesSandbox(templates={templates}, port={port}, key_id='bench', key_token='bench-secret').serve_forever()"
        )
        self.process = subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).resolve().parent.parent))
        self.url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the sandbox did not start")


def start_sandbox_process(templates: int) -> SandboxProcess:
    return SandboxProcess(templates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--now-only", action="store_true", help="time only the current first sync, not its steps")
    args = parser.parse_args()

    setup_django("smartpass_bench_sync")
    from django.conf import settings
    from django.db import connection
    from django.db.backends.signals import connection_created

    from templates_sync import sync
    from templates_sync.models import PassTemplate, SyncRun, TemplateInputField

    sandbox = start_sandbox_process(args.templates)
    settings.SMARTPAGES_API_URL, settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = (
        sandbox.url,
        "bench",
        "bench-secret",
    )
    settings.SMARTPAGES_PAGE_SIZE = args.page_size
    pages = -(-args.templates // args.page_size)

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    def cpu_timed(fn):
        # This process's CPU, every thread of it: unlike the wall time, other work on the machine hardly moves it.
        start = time.process_time()
        seconds, result = timed(fn)
        return seconds, time.process_time() - start, result

    def empty_mirror():
        PassTemplate.objects.all().delete()
        SyncRun.objects.all().delete()

    # The first sync's steps, each measured in the same run: the writer as it was before (one
    # INSERT … SELECT FROM json_to_recordset per page, written between fetches, each commit waiting for its
    # WAL flush), then each change added in turn. Variants swap the writer's parts, nothing else.
    class InlineWriter(sync.PageWriter):
        _writes_in_thread = staticmethod(lambda: False)

    def upsert_writer(*, synchronous_commit: bool):
        def write(templates, fields, *, replaced, now):
            if not synchronous_commit:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            sync._upsert_with_postgresql(templates, fields, replaced=replaced, now=now)

        return write

    current = (sync.PageWriter, sync._write_with_postgresql, False)
    steps = {
        "before: json_to_recordset, written between fetches": (
            InlineWriter,
            upsert_writer(synchronous_commit=True),
            True,
        ),
        "+ written by a thread while fetching": (sync.PageWriter, upsert_writer(synchronous_commit=True), True),
        "+ commits without waiting for WAL flush": (sync.PageWriter, upsert_writer(synchronous_commit=False), True),
        "+ COPY of new templates": (*current[:2], True),
        "+ one index less on input fields (now)": current,
    }
    if args.now_only:
        steps = {"full sync, empty mirror": current}
    fields_table = TemplateInputField._meta.db_table

    def first_sync(writer_class, write, old_index):
        sync.PageWriter, sync._write_with_postgresql = writer_class, write
        if old_index:  # the index on template_id alone that the unique (template, identifier) index made redundant
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE INDEX bench_fields_template_id ON {fields_table} (template_id)")
        try:
            empty_mirror()
            seconds, cpu, run = cpu_timed(sync.templates_sync_all)
        finally:
            sync.PageWriter, sync._write_with_postgresql = current[:2]
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX IF EXISTS bench_fields_template_id")
        assert run.status == "succeeded" and run.created_count == args.templates, (run.status, run.error)
        return seconds, cpu

    bare_fetch(sandbox.url, "bench", "bench-secret", args.page_size)  # warm the sandbox and the OS
    bare, full, resync = [], {label: [] for label in steps}, []
    full_cpu, bare_cpu = {label: [] for label in steps}, []
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits every figure alike
        seconds, cpu, _ = cpu_timed(lambda: bare_fetch(sandbox.url, "bench", "bench-secret", args.page_size))
        bare.append(seconds)
        bare_cpu.append(cpu)
        for label, step in steps.items():
            seconds, cpu = first_sync(*step)
            full[label].append(seconds)
            full_cpu[label].append(cpu)
        with connection.cursor() as cursor:  # as after a quiet quarter-hour: the writes have settled
            cursor.execute("VACUUM ANALYZE templates_sync_passtemplate")
        seconds, run = timed(sync.templates_sync_all)
        assert run.unchanged == args.templates, run.unchanged
        resync.append(seconds)

    # Statements of every connection the sync opens (its page writer has one of its own), and rows written
    # as PostgreSQL counts them (COPY included).
    statements: list[str] = []

    def count_statements(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    def install_counter(sender, connection, **kwargs):
        connection.execute_wrappers.append(count_statements)

    connection_created.connect(install_counter)
    connection.execute_wrappers.append(count_statements)
    mirror_tables = (PassTemplate._meta.db_table, TemplateInputField._meta.db_table)

    def rows_written() -> int:
        time.sleep(1.5)  # PostgreSQL publishes a backend's table counters at most once a second
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                "WHERE relname IN (%s, %s)",
                mirror_tables,
            )
            return int(cursor.fetchone()[0])

    empty_mirror()
    statements.clear()
    sync.templates_sync_all()
    first_statements = len(statements)
    written_before = rows_written()
    statements.clear()
    sync.templates_sync_all()
    resync_statements = len(statements)
    resync_rows = rows_written() - written_before

    sandbox.process.terminate()
    b, r = statistics.median(bare), statistics.median(resync)
    print(f"templates {args.templates}, page size {args.page_size}, pages {pages}, median of {args.repeat} runs")
    print(
        f"bare fetch (requests + json)                            {b:7.3f} s   this process's CPU {statistics.median(bare_cpu):6.3f} s"
    )
    print("first full sync into an empty mirror (goal <= 2 x the bare fetch):")
    for label, seconds in full.items():
        f = statistics.median(seconds)
        print(f"  {label:52s}{f:7.3f} s   ratio {f / b:5.2f}   CPU {statistics.median(full_cpu[label]):6.3f} s")
    print(f"unchanged re-sync                                     {r:7.3f} s   ratio {r / b:5.2f}  (goal <= 1.25)")
    print(
        f"statements per page, full sync                        {first_statements / pages:7.2f}   (COPYs not counted)"
    )
    print(f"statements per page, re-sync                          {resync_statements / pages:7.2f}")
    print(f"mirror rows written by re-sync                        {resync_rows:7d}   (goal 0)")


if __name__ == "__main__":
    main()
