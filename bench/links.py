"""Benchmark: SmartPass link generation against PassKit's own Go generator and a bare CSV + AES-GCM loop, side
by side in one run.

One CSV of --rows rows (PassKit's header names person.emailAddress, person.displayName, person.mobileNumber;
unique values) is generated in a temporary directory (and one of 100,000 rows with --memory). Each
generate_links run is a child process on the production settings (portal.settings, DEBUG off; --debug adds
the same run with DEBUG on) doing exactly what `manage.py generate_links --jobs N` does (upload check,
confirm, make the chunks in N processes, copy the result out), timed end to end (wall) and by phase.
PassKit's generator (github.com/PassKit/smart-pass-link-from-csv-generator, its prebuilt
bin/smartpass-link-gen-linux-x86-64; the path in PASSKIT_GEN or --passkit; never committed) runs on the same
file. The pair runs --repeat times, interleaved (the order alternates), each figure printed with the load
average of that moment: the claim is the ratio within one pair (goal: --jobs 2 ≤ 1.5 × PassKit). Each run's
CPU seconds (the command's processes; the PostgreSQL backends serving the bench database, read from /proc
while it runs) are printed too: on a shared machine those are the steadier figures. The bare loop (csv read →
AES-256-GCM of the row → base64url → csv write, nothing else) runs in this process once.

    PASSKIT_GEN=/path/to/smartpass-link-gen-linux-x86-64 .venv/bin/python bench/links.py [--rows 1000000] [--repeat 3]

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
import time
from pathlib import Path

from _db import BackendCpu  # bench/ is on sys.path: the scripts run as `python bench/NAME.py`

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


def run_child(template_id: str, source: Path, media: Path, jobs: int, database: str, env: dict[str, str]) -> dict:
    backends = BackendCpu(database)
    backends.look()
    before = dict(backends.seen)  # backends already there (this process's own connection) count from now
    backends.start()
    result = subprocess.run(
        [sys.executable, __file__, "--child", template_id, str(source), str(media), str(jobs)],
        capture_output=True,
        text=True,
        env=env,
    )
    if result.returncode:
        sys.exit(f"the service run failed:\n{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    backend_seconds = backends.seconds() - sum(before.values()) / os.sysconf("SC_CLK_TCK")
    figures["postgres_cpu_seconds"] = backend_seconds
    return figures


def run_passkit(binary: str, source: Path, target: Path) -> dict:
    """PassKit's generator on the same file: AES-256-CBC of each row's JSON, one link per row. Wall seconds and
    the CPU seconds of its process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [binary, "-in", str(source), "-out", str(target), "-url", "https://pub1.pskt.io/c/bench", "-key", "ab" * 32],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"PassKit's generator failed:\n{result.stderr}")
    with target.open("rb") as out:
        lines = sum(block.count(b"\n") for block in iter(lambda: out.read(1 << 20), b""))
    target.unlink()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_seconds": wall, "cpu_seconds": cpu, "lines": lines}


def production_env(*, debug: bool) -> dict[str, str]:
    """The command's environment: portal.settings (what `manage.py generate_links` runs on), DEBUG as asked."""
    env = os.environ.copy()
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "true" if debug else "false",
            "SECRET_KEY": env.get("SECRET_KEY") or "bench-" + "k" * 60,
            "SMARTPASS_LINK_KEYS": env.get("SMARTPASS_LINK_KEYS")
            or "bench:" + base64.b64encode(os.urandom(32)).decode(),
            "ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    return env


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="pairs of PassKit and --jobs 2 runs, interleaved")
    parser.add_argument("--passkit", default=os.environ.get("PASSKIT_GEN", ""), help="PassKit's generator binary")
    parser.add_argument("--debug", action="store_true", help="also run --jobs 2 with DEBUG on, in each round")
    parser.add_argument("--jobs1", action="store_true", help="also run --jobs 1 once")
    parser.add_argument("--memory", action="store_true", help="also run on 100,000 rows: peak memory is flat")
    parser.add_argument("--database", default=DATABASE, help=f"the throw-away database (default {DATABASE})")
    parser.add_argument("--child", nargs=4, metavar=("TEMPLATE", "CSV", "MEDIA", "JOBS"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        sys.path.insert(0, str(HERE.parent))
        return child(*options.child)
    if not options.passkit or not os.access(options.passkit, os.X_OK):
        sys.exit("Set PASSKIT_GEN (or --passkit) to PassKit's smartpass-link-gen-linux-x86-64.")

    from _db import mirror_template, setup_django

    print(f"{load()} at the start, on {os.cpu_count()} CPUs")
    setup_django(options.database)

    formats = [("EMAIL", True), ("TEXT", True), ("PHONE_NUMBER", False)]
    template = mirror_template(
        "Bench", [(identifier, fmt, mandatory) for identifier, (fmt, mandatory) in zip(FIELDS, formats, strict=True)]
    )
    rows = options.rows
    production, debug = production_env(debug=False), production_env(debug=True)

    def generate(path: Path, jobs: int, env: dict[str, str]) -> dict:
        run = run_child(str(template.pk), path, tmp / "media", jobs, options.database, env)
        assert run["links"] == run["rows"], run  # every valid row linked
        return run

    def line(what: str, run: dict, count: int) -> str:
        return (
            f"{what}: {run['wall_seconds']:.2f} s wall ({run['check_seconds']:.2f} s upload check, "
            f"{run['make_seconds']:.2f} s making {run['chunks']} chunks, {run['copy_seconds']:.2f} s copying out); "
            f"CPU {run['cpu_seconds']:.2f} s = {count / run['cpu_seconds']:,.0f} rows per CPU-second "
            f"+ {run['postgres_cpu_seconds']:.2f} s PostgreSQL; {load()}"
        )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "big.csv"
        write_campaign(big, rows)
        print(f"input: {rows:,} rows, {big.stat().st_size / 1e6:.1f} MB ({', '.join(HEADER)})")
        bare_seconds, bare_cpu_seconds = bare_loop(big, tmp / "bare.csv")
        print(
            f"bare loop (csv → AES-GCM → csv, one process): {bare_seconds:.2f} s = {rows / bare_seconds:,.0f} rows/s "
            f"({bare_cpu_seconds:.2f} CPU-s); {load()}"
        )
        ratios = []
        for round_number in range(1, options.repeat + 1):
            print(f"round {round_number}:")
            order = ("passkit", "jobs2") if round_number % 2 else ("jobs2", "passkit")
            figures = {}
            for what in order:
                if what == "passkit":
                    figures[what] = run_passkit(options.passkit, big, tmp / "passkit.csv")
                    assert figures[what]["lines"] == rows + 1, figures[what]
                    passkit = figures[what]
                    print(
                        f"  PassKit's Go generator: {passkit['wall_seconds']:.2f} s wall, "
                        f"CPU {passkit['cpu_seconds']:.2f} s, {rows:,} links; {load()}"
                    )
                else:
                    figures[what] = generate(big, 2, production)
                    print("  " + line("generate_links --jobs 2", figures[what], rows))
            ratio = figures["jobs2"]["wall_seconds"] / figures["passkit"]["wall_seconds"]
            ratios.append(ratio)
            verdict = "met" if ratio <= 1.5 else "NOT met"
            print(f"  ratio --jobs 2 / PassKit = {ratio:.2f} (goal ≤ 1.5: {verdict})")
            if options.debug:
                on = generate(big, 2, debug)
                print("  " + line("generate_links --jobs 2 with DEBUG on", on, rows))
                print(f"  DEBUG on / off = {on['wall_seconds'] / figures['jobs2']['wall_seconds']:.2f} (wall)")
        print(f"ratios --jobs 2 / PassKit, each in its own round: {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
        if options.jobs1:
            print(line("generate_links --jobs 1", generate(big, 1, production), rows))
        print(
            f"field validation alone (members.validation, email + name + phone): "
            f"{validation_only(big, 50_000) * 1e6:.1f} µs/row; {load()}"
        )
        if options.memory:
            small = tmp / "small.csv"
            write_campaign(small, 100_000)
            for jobs in (1, 2):
                small_mib = generate(small, jobs, production)["maxrss_kib"] / 1024
                big_mib = generate(big, jobs, production)["maxrss_kib"] / 1024
                print(
                    f"peak memory per process, --jobs {jobs}: 100,000 rows {small_mib:.0f} MiB; {rows:,} rows {big_mib:.0f} MiB"
                )
    print(f"{load()} at the end")


if __name__ == "__main__":
    main()
