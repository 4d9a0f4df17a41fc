"""Benchmark: a full template sync against a bare fetch of the same pages, in the same run.

10,000 templates in the sandbox (a process of its own), page size 100, PostgreSQL. Prints the bare loop's
time (requests + json, nothing else), the first full sync into an empty mirror (10,000 inserts) as it was
before this work, as it is but written between fetches, and as it is, an unchanged re-sync, their ratios to the bare loop (goals: first
sync <= 2x, unchanged re-sync <= 1.25x), transactions per page, and rows written by the unchanged
re-sync as PostgreSQL counts them (goal: 0). Each timing is the median of --repeat interleaved runs; beside
the wall time, the CPU seconds of this process, of PostgreSQL and of the sandbox, and
their sum's ratio to the bare loop's (which other work on the machine hardly moves).

Then the same against a SQLite mirror (the embedded default; a process of its own, the same sandbox): the bare
fetch, the first sync into an empty mirror and an unchanged re-sync, medians of --repeat interleaved runs, and
the mirror rows the re-sync wrote (goal 0).

    .venv/bin/python bench/sync.py [--templates 10000] [--repeat 3] [--now-only] [--no-sqlite]
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


def _stat(pid) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the process's name (state, ppid, … utime, stime, cutime, cstime at
    11-14), or None once the process has ended."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def _name(pid) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except FileNotFoundError:
        return None


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (the sandbox's)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgresql_cpu() -> float:
    """CPU seconds of PostgreSQL on this machine so far: every server process, the backends that ended too
    (the postmaster counts its children's once they end), and its WAL writer, whose work the sync causes."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if _name(pid) != "postgres" or (fields := _stat(pid)) is None:
            continue
        total += int(fields[11]) + int(fields[12])
        if _name(fields[1]) != "postgres":  # the postmaster: its ended children's time too
            total += int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


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
            "from sandbox import SmartPagesSandbox; "
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
    fields_table: bool = False  # the input fields' table, with its index and foreign key (see sync_before)
    jsonb_raw: bool = False  # raw stored as jsonb (json text since 0007)
    pages_per_write: int = 1  # pages the writer writes together when they queue up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--now-only", action="store_true", help="time only the current first sync, not its steps")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite mirror (the embedded default)")
    parser.add_argument("--sqlite-child", metavar="SANDBOX_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sqlite_child:
        sqlite_child(args)
        return

    setup_django("smartpass_bench_sync")
    import sync_before as before
    from django.conf import settings
    from django.db import connection, transaction

    from templates_sync import sync
    from templates_sync.models import PassTemplate, SyncRun
    from templates_sync.sync import running, writing

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
        """Wall time, this process's CPU (every thread of it: unlike the wall time, other work on the machine
        hardly moves it), PostgreSQL's CPU meanwhile and the sandbox's, and fn's result."""
        connection.ensure_connection()
        start, server, upstream = time.process_time(), postgresql_cpu(), process_cpu(sandbox.process.pid)
        seconds, result = timed(fn)
        cpu = Cpu(time.process_time() - start, postgresql_cpu() - server, process_cpu(sandbox.process.pid) - upstream)
        return seconds, cpu, result

    def empty_mirror():
        # As a newly installed portal's: no rows, and none deleted that inserts would have to step over (the
        # bench database holds nothing else that CASCADE would empty).
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {PassTemplate._meta.db_table} CASCADE")
        SyncRun.objects.all().delete()

    # The first sync as it was before this work (one INSERT … SELECT FROM json_to_recordset per page, written
    # between fetches, each commit waiting for its WAL flush, pages prepared as the portal did then:
    # bench/sync_before.py, with the input fields' table it had), as it is now but written between fetches
    # on the run's own connection, and as it is. Variants swap the writer's parts, nothing else.
    class InlineWriter(sync.PageWriter):
        _writes_in_thread = staticmethod(lambda: False)

    def write_pages_before(page, *, now):
        if page.templates:
            with transaction.atomic():
                before._upsert_with_postgresql(page.templates, page.fields, replaced=page.replaced, now=now)

    current = Step(sync.PageWriter, writing._prepare, writing._write, pages_per_write=sync.PAGES_PER_WRITE)
    steps = {
        "before: json_to_recordset, written between fetches": Step(
            InlineWriter, before._prepare, write_pages_before, fields_table=True, jsonb_raw=True
        ),
        "now, but written between fetches, on one connection": Step(InlineWriter, writing._prepare, writing._write),
        "now: written by a thread of its own while fetching": current,
    }
    if args.now_only:
        steps = {"full sync, empty mirror": current}
    templates_table = PassTemplate._meta.db_table

    def first_sync(step):
        # The writer's parts are looked up where they are used: the run (running) and the writer (writing).
        running.PageWriter, running._prepare, writing._write = step.writer, step.prepare, step.write
        writing.PAGES_PER_WRITE = step.pages_per_write
        with connection.cursor() as cursor:
            if step.fields_table:
                cursor.execute(before.CREATE_FIELDS_TABLE)
            if step.jsonb_raw:
                cursor.execute(f"ALTER TABLE {templates_table} ALTER raw TYPE jsonb")
        try:
            empty_mirror()
            seconds, cpu, run = cpu_timed(sync.templates_sync_all)
        finally:
            running.PageWriter, running._prepare, writing._write = current.writer, current.prepare, current.write
            writing.PAGES_PER_WRITE = current.pages_per_write
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {before.FIELDS_TABLE}")
                cursor.execute(f"ALTER TABLE {templates_table} ALTER raw TYPE json")
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

    # Transactions committed and rows written as PostgreSQL counts them (COPY included), on every connection
    # the sync opens (its page writer has one of its own).
    def database_counts() -> tuple[int, int]:
        time.sleep(1.5)  # PostgreSQL publishes a backend's counters at most once a second
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            commits = int(cursor.fetchone()[0])
            cursor.execute(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
                "WHERE relname = %s",
                [templates_table],
            )
            return commits, int(cursor.fetchone()[0])

    empty_mirror()
    commits_before, _ = database_counts()
    sync.templates_sync_all()
    commits_first, written_before = database_counts()
    sync.templates_sync_all()
    commits_resync, written_after = database_counts()
    # Each database_counts() commits once itself (its own SELECTs, in autocommit).
    first_commits, resync_commits = commits_first - commits_before - 1, commits_resync - commits_first - 1
    resync_rows = written_after - written_before

    sqlite = None if args.no_sqlite else run_sqlite_child(sandbox.url, args)
    loads.append(os.getloadavg()[0])
    sandbox.process.terminate()
    b, b_cpu = median_of(bare)
    print(
        f"templates {args.templates}, page size {args.page_size}, pages {pages}, median of {args.repeat} runs, "
        f"load average {min(loads):.1f}-{max(loads):.1f} (1 min, {os.cpu_count()} CPUs)"
    )
    print(
        "CPU seconds: this process (all threads) + PostgreSQL (every process of it) + the sandbox = all; "
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
    print(f"transactions per page, full sync                      {first_commits / pages:7.2f}")
    print(f"transactions per page, re-sync                        {resync_commits / pages:7.2f}")
    print(f"mirror rows written by re-sync                        {resync_rows:7d}   (goal 0)")
    if sqlite is not None:
        print("SQLite (the embedded default), a file on this disk, in a process of its own, against the same sandbox:")
        sb = sqlite["bare"]
        for label, key, goal in (
            ("bare fetch (requests + json)", "bare", ""),
            ("first full sync, before: ORM bulk_create, page commits", "before", ""),
            ("first full sync into an empty mirror", "first", " (goal <= 2)"),
            ("unchanged re-sync", "resync", " (goal <= 1.25)"),
        ):
            print(f"  {label:54s}{sqlite[key]:7.3f}s{sqlite[key] / sb:7.2f}{goal}")
        print(f"  mirror rows written by re-sync                      {sqlite['resync_rows']:7d}   (goal 0)")
        print(f"  load average during the SQLite runs {sqlite['load_min']:.1f}-{sqlite['load_max']:.1f}")


def run_sqlite_child(sandbox_url: str, args) -> dict:
    """The SQLite figures, from this script run again in a process of its own (Django set up on SQLite)."""
    import json
    import subprocess
    import sys

    command = [
        sys.executable,
        __file__,
        "--sqlite-child",
        sandbox_url,
        "--templates",
        str(args.templates),
        "--page-size",
        str(args.page_size),
        "--repeat",
        str(args.repeat),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the SQLite run failed:\n{result.stderr[-3000:]}")
    output = result.stdout
    return json.loads(output.strip().splitlines()[-1])


def in_fork(measure) -> float:
    """`measure()` (it returns seconds) twice in a forked child of this process, the second time timed: each
    kind of run is measured in its own steady state, from the same start. Run one after the other in one
    process, each inherited the heap the run before left (glibc's malloc tunes its thresholds to what was freed
    before): in a scratch loop, after the ORM's first sync the bare fetch took 0.206 s and the re-sync 0.275 s,
    after one of their own 0.237 s each; in this bench the re-sync's ratio went from 1.32-1.35 to 1.17-1.20 with
    this method (bench/README.md). The first, untimed call also pays the child's copy-on-write faults, which a
    long-running process does not."""
    import json

    from django.db import connections

    connections.close_all()  # the child opens its own SQLite connection
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            measure()
            result = {"seconds": measure()}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the run
            result = {"error": repr(exc)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        result = json.loads(reader.read() or b'{"error": "the child died"}')
    os.waitpid(pid, 0)
    if "error" in result:
        raise RuntimeError(f"a measurement failed: {result['error']}")
    return result["seconds"]


def sqlite_child(args) -> None:
    """Bare fetch, first sync into an empty SQLite mirror and unchanged re-sync, interleaved --repeat times;
    prints their medians (and the mirror rows the re-sync wrote, counted by temporary triggers) as JSON."""
    import json
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix="bench-sync-sqlite-")
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/db.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from templates_sync import sync
    from templates_sync.models import PassTemplate, SyncRun

    call_command("migrate", verbosity=0)
    settings.SMARTPAGES_API_URL, settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = (
        args.sqlite_child,
        "bench",
        "bench-secret",
    )
    settings.SMARTPAGES_PAGE_SIZE = args.page_size
    table = PassTemplate._meta.db_table

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    from templates_sync.sync import running, writing

    def first_sync() -> float:
        with connection.cursor() as cursor:  # an empty mirror, as a newly installed portal's
            cursor.execute(f"DELETE FROM {table}")
        SyncRun.objects.all().delete()
        seconds, run = timed(sync.templates_sync_all)
        assert run.status == "succeeded" and run.created_count == args.templates, (run.status, run.error)
        return seconds

    def first_sync_before() -> float:
        """As before this work: the ORM's bulk_create per page, each page its own transaction, two pages ahead."""
        saved = writing._write_with_sqlite, writing.PageWriter.__dict__["_gathers"], running._pages_ahead
        writing._write_with_sqlite = writing._write_with_orm
        writing.PageWriter._gathers = staticmethod(lambda: False)
        running._pages_ahead = lambda: 2
        try:
            return first_sync()
        finally:
            writing._write_with_sqlite, writing.PageWriter._gathers, running._pages_ahead = saved

    def resync_unchanged() -> float:
        seconds, run = timed(sync.templates_sync_all)
        assert run.unchanged == args.templates, run.unchanged
        return seconds

    def bare_seconds() -> float:
        return timed(lambda: bare_fetch(args.sqlite_child, "bench", "bench-secret", args.page_size))[0]

    bare_fetch(args.sqlite_child, "bench", "bench-secret", args.page_size)
    first_sync()  # warm: the mirror full, every code path run once, before the parent is forked
    bare, before, first, resync, loads = [], [], [], [], [os.getloadavg()[0]]
    for _ in range(args.repeat):
        bare.append(in_fork(bare_seconds))
        before.append(in_fork(first_sync_before))
        first.append(in_fork(first_sync))
        resync.append(in_fork(resync_unchanged))  # the mirror as the last first sync left it: full
        loads.append(os.getloadavg()[0])
    with connection.cursor() as cursor:  # triggers of the throw-away database count the mirror's row writes
        cursor.execute("CREATE TABLE bench_written (n INTEGER)")
        cursor.execute("INSERT INTO bench_written VALUES (0)")
        for operation in ("INSERT", "UPDATE", "DELETE"):
            cursor.execute(
                f"CREATE TRIGGER bench_count_{operation.lower()} AFTER {operation} ON {table} "
                "BEGIN UPDATE bench_written SET n = n + 1; END"
            )
    sync.templates_sync_all()
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM bench_written")
        resync_rows = cursor.fetchone()[0]
    figures = {
        "bare": statistics.median(bare),
        "before": statistics.median(before),
        "first": statistics.median(first),
        "resync": statistics.median(resync),
        "resync_rows": resync_rows,
        "load_min": min(loads),
        "load_max": max(loads),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
