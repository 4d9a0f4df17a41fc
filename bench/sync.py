"""Benchmark: a full template sync against a bare fetch of the same pages, in the same run.

10,000 templates in the sandbox (a process of its own), page size 100, PostgreSQL. Prints the bare loop's
time (requests + json, nothing else), the first full sync into an empty mirror (10,000 inserts) as it was
and with each step that made it faster, an unchanged re-sync, their ratios to the bare loop (goals: first
sync <= 2x, unchanged re-sync <= 1.25x), database statements per page, and rows written by the unchanged
re-sync as PostgreSQL counts them (goal: 0). Each timing is the median of --repeat interleaved runs; beside
the wall time, the CPU seconds of this process, of the sync's PostgreSQL backends and of the sandbox, and
their sum's ratio to the bare loop's (which other work on the machine hardly moves).

    .venv/bin/python bench/sync.py [--templates 10000] [--repeat 3] [--now-only]
"""

import argparse
import atexit
import base64
import os
import statistics
import time
from pathlib import Path
from typing import NamedTuple

from _db import setup_django


class Cpu(NamedTuple):
    this: float
    postgresql: float
    sandbox: float

    @property
    def all(self) -> float:
        return self.this + self.postgresql + self.sandbox


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (any process on this machine, PostgreSQL's backends too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # a backend that ended already
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_of(runs: list[tuple[float, Cpu]]) -> tuple[float, Cpu]:
    """The median wall time and, field by field, the median CPU."""
    return statistics.median(seconds for seconds, _ in runs), Cpu(
        *(statistics.median(c) for c in zip(*(cpu for _, cpu in runs), strict=True))
    )


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
        atexit.register(self.process.terminate)  # also when the benchmark fails
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


class Step(NamedTuple):
    """The sync's swappable parts for one step (see main)."""

    writer: type
    prepare: object
    write: object
    old_index: bool = False  # the input fields' index on template_id alone (dropped in 0005)
    foreign_key: bool = False  # the input fields' foreign key constraint (dropped in 0006)
    pages_per_write: int = 1  # pages the writer thread writes together when they queue up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--now-only", action="store_true", help="time only the current first sync, not its steps")
    args = parser.parse_args()

    setup_django("smartpass_bench_sync")
    import sync_before as before
    from django.conf import settings
    from django.db import connection, transaction
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

    # PostgreSQL's CPU for the sync: that of the backends of every connection open or opened meanwhile (the
    # page writer has one of its own; this process's connection is closed and opened again by each run), each
    # read just before the connection closes.
    open_backends: dict = {}  # connection -> its backend's pid
    closed_backends_cpu: list[float] = []

    def count_backend_cpu(sender, connection, **kwargs):
        open_backends[connection] = connection.connection.info.backend_pid
        if hasattr(connection, "bench_close"):
            return
        connection.bench_close = connection.close

        def close_and_count():
            pid = open_backends.pop(connection, None)
            if pid is not None:
                closed_backends_cpu.append(process_cpu(pid))
            connection.bench_close()

        connection.close = close_and_count

    connection.close()  # opened again below, counted
    connection_created.connect(count_backend_cpu)

    def open_backends_cpu() -> float:
        return sum(process_cpu(pid) for pid in open_backends.values())

    def cpu_timed(fn):
        """Wall time, this process's CPU (every thread of it: unlike the wall time, other work on the machine
        hardly moves it), PostgreSQL's CPU for it and the sandbox's, and fn's result."""
        connection.ensure_connection()
        closed_backends_cpu.clear()
        start, server, upstream = time.process_time(), open_backends_cpu(), process_cpu(sandbox.process.pid)
        seconds, result = timed(fn)
        server = open_backends_cpu() + sum(closed_backends_cpu) - server
        return seconds, Cpu(time.process_time() - start, server, process_cpu(sandbox.process.pid) - upstream), result

    def empty_mirror():
        # As a newly installed portal's: no rows, and none deleted that inserts would have to step over (the
        # bench database holds nothing else that CASCADE would empty).
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {PassTemplate._meta.db_table}, {TemplateInputField._meta.db_table} CASCADE")
        SyncRun.objects.all().delete()

    # The first sync's steps, each measured in the same run: the writer as it was before (one
    # INSERT … SELECT FROM json_to_recordset per page, written between fetches, each commit waiting for its
    # WAL flush), then each change added in turn. Variants swap the writer's parts, nothing else; the earlier
    # steps prepare pages as the portal did then (bench/sync_before.py).
    class InlineWriter(sync.PageWriter):
        _writes_in_thread = staticmethod(lambda: False)

    def upsert_writer(*, synchronous_commit: bool):
        def write(templates, fields, *, replaced, now):
            if not synchronous_commit:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            before._upsert_with_postgresql(templates, fields, replaced=replaced, now=now)

        return write

    def write_pages_with(write):
        def write_page(page, *, now):
            if page.templates:
                with transaction.atomic():
                    write(page.templates, page.fields, replaced=page.replaced, now=now)

        return write_page

    current = Step(sync.PageWriter, sync._prepare, sync._write, pages_per_write=sync.PAGES_PER_WRITE)
    earlier_write = write_pages_with(before._write_with_postgresql)
    steps = {
        "before: json_to_recordset, written between fetches": Step(
            InlineWriter, before._prepare, write_pages_with(upsert_writer(synchronous_commit=True)), True, True
        ),
        "+ written by a thread while fetching": Step(
            sync.PageWriter, before._prepare, write_pages_with(upsert_writer(synchronous_commit=True)), True, True
        ),
        "+ commits without waiting for WAL flush": Step(
            sync.PageWriter, before._prepare, write_pages_with(upsert_writer(synchronous_commit=False)), True, True
        ),
        "+ COPY of new templates": Step(sync.PageWriter, before._prepare, earlier_write, True, True),
        "+ one index less on input fields": Step(sync.PageWriter, before._prepare, earlier_write, False, True),
        "+ rows built once, JSON serialised once": Step(sync.PageWriter, sync._prepare, sync._write, False, True),
        "+ no foreign key check per input field": Step(sync.PageWriter, sync._prepare, sync._write),
        "+ pages that queue up written together (now)": current,
    }
    if args.now_only:
        steps = {"full sync, empty mirror": current}
    fields_table = TemplateInputField._meta.db_table

    def first_sync(step):
        sync.PageWriter, sync._prepare, sync._write = step.writer, step.prepare, step.write
        sync.PAGES_PER_WRITE = step.pages_per_write
        with connection.cursor() as cursor:
            if step.old_index:
                cursor.execute(f"CREATE INDEX bench_fields_template_id ON {fields_table} (template_id)")
            if step.foreign_key:
                cursor.execute(
                    f"ALTER TABLE {fields_table} ADD CONSTRAINT bench_fields_template_fk FOREIGN KEY (template_id) "
                    f"REFERENCES {PassTemplate._meta.db_table} (id) DEFERRABLE INITIALLY DEFERRED"
                )
        try:
            empty_mirror()
            seconds, cpu, run = cpu_timed(sync.templates_sync_all)
        finally:
            sync.PageWriter, sync._prepare, sync._write = current.writer, current.prepare, current.write
            sync.PAGES_PER_WRITE = current.pages_per_write
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX IF EXISTS bench_fields_template_id")
                cursor.execute(f"ALTER TABLE {fields_table} DROP CONSTRAINT IF EXISTS bench_fields_template_fk")
        assert run.status == "succeeded" and run.created_count == args.templates, (run.status, run.error)
        return seconds, cpu

    bare_fetch(sandbox.url, "bench", "bench-secret", args.page_size)  # warm the sandbox and the OS
    bare, full, resync = [], {label: [] for label in steps}, []
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeat):  # interleaved, so drift on the machine hits every figure alike
        seconds, cpu, _ = cpu_timed(lambda: bare_fetch(sandbox.url, "bench", "bench-secret", args.page_size))
        bare.append((seconds, cpu))
        for label, step in steps.items():
            full[label].append(first_sync(step))
        with connection.cursor() as cursor:  # as after a quiet quarter-hour: the writes have settled
            cursor.execute("VACUUM ANALYZE templates_sync_passtemplate")
        seconds, cpu, run = cpu_timed(sync.templates_sync_all)
        assert run.unchanged == args.templates, run.unchanged
        resync.append((seconds, cpu))
        loads.append(os.getloadavg()[0])

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
    b, b_cpu = median_of(bare)
    print(
        f"templates {args.templates}, page size {args.page_size}, pages {pages}, median of {args.repeat} runs, "
        f"load average {min(loads):.1f}-{max(loads):.1f} (1 min, {os.cpu_count()} CPUs)"
    )
    print(
        "CPU seconds: this process (all threads) + PostgreSQL (the sync's backends) + the sandbox = all; "
        "CPU ratio = all / the bare fetch's all"
    )
    header = f"{'':56s}{'wall':>8s}{'ratio':>7s}   {'this':>6s}{'pg':>7s}{'sandbox':>8s}{'all':>7s}{'ratio':>7s}"
    print(header)

    def line(label, seconds, cpu):
        print(
            f"{label:56s}{seconds:7.3f}s{seconds / b:7.2f}   {cpu.this:6.3f}{cpu.postgresql:7.3f}{cpu.sandbox:8.3f}"
            f"{cpu.all:7.3f}{cpu.all / b_cpu.all:7.2f}"
        )

    line("bare fetch (requests + json)", b, b_cpu)
    print("first full sync into an empty mirror (goal <= 2 x the bare fetch):")
    for label, runs in full.items():
        line(f"  {label}", *median_of(runs))
    line("unchanged re-sync (goal <= 1.25 x the bare fetch)", *median_of(resync))
    print(
        f"statements per page, full sync                        {first_statements / pages:7.2f}   (COPYs not counted)"
    )
    print(f"statements per page, re-sync                          {resync_statements / pages:7.2f}")
    print(f"mirror rows written by re-sync                        {resync_rows:7d}   (goal 0)")


if __name__ == "__main__":
    main()
