"""Benchmark: SmartPass link generation against a bare CSV + AES-GCM loop, side by side in one run.

One CSV of --rows rows (PassKit's header names person.emailAddress, person.displayName, person.mobileNumber;
unique values) and one of 100,000 rows are generated in a temporary directory. Each measured run is a child
process doing exactly what `manage.py generate_links --jobs N` does (upload check, confirm, make the chunks
in N processes, copy the result out), timed end to end (wall) and by phase; its peak memory per process is
the largest ru_maxrss of the child and of the processes it forked. Runs: --jobs 1 and --jobs 2 on both
files. The bare loop (csv read → AES-256-GCM of the row → base64url → csv write, nothing else) runs in this
process on the big file. Prints rows/second, the wall times against PassKit's 5.7 s per million (goal for
--jobs 2 on 2 cores: ≤ 11.5 s), the CPU seconds of each run (the command's processes, and the PostgreSQL
backends serving the bench database, read from /proc while it runs) with the load average before and after:
on a shared machine those are the steadier figures. Then the peak memory at 100k and at --rows rows (goal:
flat) and the median link length.

    .venv/bin/python bench/links.py [--rows 1000000]

PostgreSQL on 127.0.0.1:5432 (BENCH_PG); a throw-away database, `smartpass_bench_links` unless --database.
"""

import argparse
import base64
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DATABASE = "smartpass_bench_links"
HERE = Path(__file__).resolve().parent


# PassKit's own column names: the upload maps them to the template's email, name and phone fields.
HEADER = ["person.emailAddress", "person.displayName", "person.mobileNumber"]
FIELDS = ["email", "name", "phone"]


def write_campaign(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for number in range(1, rows + 1):
            mobile = 8200001 + number % 50000
            phone = f"+354 {mobile}" if number % 2 else f"{mobile // 10000} {mobile % 10000:04d}"
            writer.writerow([f"felagi{number}@example.is", f"Guðrún Jónsdóttir {number}", phone])


def bare_loop(source: Path, target: Path) -> tuple[float, float]:
    """csv read → AES-GCM (random nonce) → base64url → csv write: the floor any link generator pays.
    (wall seconds, CPU seconds of this process)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    started, cpu_started = time.perf_counter(), time.process_time()
    with source.open(encoding="utf-8", newline="") as src, target.open("w", encoding="utf-8", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst)
        writer.writerow(next(reader) + ["smartpass_link"])
        for row in reader:
            nonce = os.urandom(12)
            token = base64.urlsafe_b64encode(nonce + aead.encrypt(nonce, "\x00".join(row).encode(), None)).rstrip(b"=")
            writer.writerow(row + ["http://127.0.0.1:8000/p/" + token.decode()])
    return time.perf_counter() - started, time.process_time() - cpu_started


def validation_only(source: Path, rows: int) -> float:
    """The per-row field validation the service runs (members.validation), alone, over the first rows."""
    from members.validation import FieldSpec, ValuesValidator

    specs = [
        FieldSpec("email", "Email", "EMAIL", True),
        FieldSpec("name", "Name", "TEXT", True),
        FieldSpec("phone", "Phone", "PHONE_NUMBER", False),
    ]
    with source.open(encoding="utf-8", newline="") as src:
        reader = csv.reader(src)
        next(reader)
        values = [dict(zip(FIELDS, row, strict=False)) for _, row in zip(range(rows), reader, strict=False)]
    validate = ValuesValidator(specs, require_types={"ISSUER"}).validate
    started = time.perf_counter()
    for row in values:
        validate(row)
    return (time.perf_counter() - started) / len(values)


def _cpu_seconds() -> float:
    """User + system CPU of this process and of its children that have ended (the chunk processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child(template_id: str, source: str, media: str, jobs: str) -> None:
    """One generate_links run in a fresh process, as the command does it; prints its figures as JSON."""
    os.environ["MEDIA_ROOT"] = media
    import django

    django.setup()

    from django.core.files import File

    from links import services
    from links.models import LinkBatch
    from templates_sync.models import PassTemplate

    template = PassTemplate.objects.get(pk=template_id)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    with open(source, "rb") as binary:
        batch = services.link_batch_create(
            template=template, uploaded_by=None, file=File(binary, name="bench.csv"), via=LinkBatch.Via.COMMAND
        )
    checked, cpu_checked = time.perf_counter(), _cpu_seconds()
    assert batch.mapping == dict(zip(HEADER, FIELDS, strict=False)), batch.mapping
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    batch = services.link_batch_process(batch_id=batch.pk, jobs=int(jobs))
    made = time.perf_counter()
    assert batch.status == "succeeded", batch.error
    result = Path(media) / f"result-{jobs}.csv"
    services.link_batch_write_output(batch=batch, path=result)
    finished = time.perf_counter()
    lengths = []
    with result.open("rb") as raw:
        for number, line in enumerate(raw):
            if number and number % 97 == 0:  # a sample is enough for a median
                lengths.append(len(line.decode("utf-8").rstrip("\r\n").split(",")[-2]))
    result.unlink()
    print(
        json.dumps(
            {
                "rows": batch.rows_done,
                "links": batch.links,
                "errors": batch.errors,
                "chunks": len(batch.plan),
                "wall_seconds": finished - started,
                "check_seconds": checked - started,
                "make_seconds": made - checked,
                "copy_seconds": finished - made,
                "check_cpu_seconds": cpu_checked - cpu_started,
                # this process from the upload check to the copy, and the processes it forked for the chunks
                "cpu_seconds": _cpu_seconds() - cpu_started,
                "maxrss_kib": max(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                ),
                "median_link_length": statistics.median(lengths),
            }
        )
    )


class BackendCpu(threading.Thread):
    """CPU seconds of the PostgreSQL backends serving `database` while a run lasts: /proc is read every 20 ms
    and each backend's last figure kept (a backend that ends between two looks loses at most 20 ms)."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.marker = f" {database} ".encode()
        self.seen: dict[int, int] = {}  # pid → utime + stime in clock ticks
        self.ours: dict[int, bool] = {}  # pid → whether it is a backend of the database
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.look()

    def look(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if pid not in self.ours:  # a process's command line is read once: this runs every 20 ms
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        self.ours[pid] = self.marker in cmdline.read()
                if not self.ours[pid]:
                    continue
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            self.seen[pid] = int(fields[11]) + int(fields[12])

    def seconds(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values()) / os.sysconf("SC_CLK_TCK")


def run_child(template_id: str, source: Path, media: Path, jobs: int, database: str) -> dict:
    backends = BackendCpu(database)
    backends.look()
    before = dict(backends.seen)  # backends already there (this process's own connection) count from now
    backends.start()
    result = subprocess.run(
        [sys.executable, __file__, "--child", template_id, str(source), str(media), str(jobs)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if result.returncode:
        sys.exit(f"the service run failed:\n{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    backend_seconds = backends.seconds() - sum(before.values()) / os.sysconf("SC_CLK_TCK")
    figures["postgres_cpu_seconds"] = backend_seconds
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", default=DATABASE, help=f"the throw-away database (default {DATABASE})")
    parser.add_argument("--child", nargs=4, metavar=("TEMPLATE", "CSV", "MEDIA", "JOBS"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        sys.path.insert(0, str(HERE.parent))
        return child(*options.child)

    from _db import mirror_template, setup_django

    load_before = os.getloadavg()[0]
    setup_django(options.database)

    formats = [("EMAIL", True), ("TEXT", True), ("PHONE_NUMBER", False)]
    template = mirror_template(
        "Bench", [(identifier, fmt, mandatory) for identifier, (fmt, mandatory) in zip(FIELDS, formats, strict=True)]
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, big = tmp / "small.csv", tmp / "big.csv"
        write_campaign(small, 100_000)
        write_campaign(big, options.rows)
        print(
            f"input: {options.rows:,} rows, {big.stat().st_size / 1e6:.1f} MB "
            "(person.emailAddress, person.displayName, person.mobileNumber)"
        )
        bare_seconds, bare_cpu_seconds = bare_loop(big, tmp / "bare.csv")
        runs = {
            (rows, jobs): run_child(str(template.pk), path, tmp / "media", jobs, options.database)
            for rows, path in ((100_000, small), (options.rows, big))
            for jobs in (1, 2)
        }
        per_row_validation = validation_only(big, 50_000)

    print(
        f"load average (1 min) before the run {load_before:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    passkit = 5.7 * options.rows / 1_000_000
    bare_rate = options.rows / bare_seconds
    print(
        f"bare loop (csv → AES-GCM → csv, one process): {bare_seconds:.1f} s = {bare_rate:,.0f} rows/s "
        f"({bare_cpu_seconds:.1f} CPU-s)"
    )
    for jobs in (1, 2):
        run = runs[(options.rows, jobs)]
        assert run["links"] == options.rows, run  # every valid row linked
        wall = run["wall_seconds"]
        print(
            f"generate_links --jobs {jobs}: {wall:.1f} s wall = {options.rows / wall:,.0f} rows/s "
            f"({run['check_seconds']:.1f} s upload check, {run['make_seconds']:.1f} s making {run['chunks']} chunks, "
            f"{run['copy_seconds']:.1f} s copying the result out); {wall / passkit:.2f} × PassKit's {passkit:.1f} s"
        )
        print(
            f"    CPU: {run['cpu_seconds']:.1f} s in the command's processes ({run['check_cpu_seconds']:.1f} s of it "
            f"the upload check) = {options.rows / run['cpu_seconds']:,.0f} rows per CPU-second; "
            f"{run['postgres_cpu_seconds']:.1f} s in PostgreSQL"
        )
    two = runs[(options.rows, 2)]["wall_seconds"]
    verdict = "met" if two <= 2 * passkit else "NOT met"
    print(f"goal --jobs 2 ≤ 2 × PassKit = {2 * passkit:.1f} s: {verdict} ({two:.1f} s)")
    print(f"field validation alone (members.validation, email + name + phone): {per_row_validation * 1e6:.1f} µs/row")
    for jobs in (1, 2):
        small_mib, big_mib = (runs[(rows, jobs)]["maxrss_kib"] / 1024 for rows in (100_000, options.rows))
        print(
            f"peak memory per process, --jobs {jobs}: 100,000 rows {small_mib:.0f} MiB; "
            f"{options.rows:,} rows {big_mib:.0f} MiB"
        )
    print(f"median link length: {runs[(options.rows, 2)]['median_link_length']:.0f} characters")


if __name__ == "__main__":
    main()
