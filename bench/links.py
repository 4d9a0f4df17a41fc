"""Benchmark: SmartPass link generation against a bare CSV + AES-GCM loop, in the same run.

A CSV of --rows rows (email, name, phone under PassKit's column names person.emailAddress, person.displayName,
person.mobileNumber; unique values; phone numbers half in E.164, half as Icelandic numbers without the country
code) is generated in a temporary directory. Each
measured run of the real service is a child process (upload check + `link_batch_process`, the code path of
the upload page, the worker and `manage.py generate_links`), so its peak memory (ru_maxrss) is its own:
once at 100,000 rows and once at --rows rows (goal: flat). The bare loop (csv read → AES-256-GCM of the
row → base64url → csv write, nothing else) runs in this process on the same file. Both are one process, so their
rows/second are per process. Prints the rows/second of both, their ratio, peak memory, the median link
length, and how much of a row's time the field validation (members.validation) takes.

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

    specs = [FieldSpec("email", "Email", "EMAIL", True), FieldSpec("name", "Name", "TEXT", True),
             FieldSpec("phone", "Phone", "PHONE_NUMBER", False)]  # fmt: skip
    with source.open(encoding="utf-8", newline="") as src:
        reader = csv.reader(src)
        next(reader)
        values = [dict(zip(FIELDS, row)) for _, row in zip(range(rows), reader)]
    validate = ValuesValidator(specs, require_types={"ISSUER"}).validate
    started = time.perf_counter()
    for row in values:
        validate(row)
    return (time.perf_counter() - started) / len(values)


def child(template_id: str, source: str, media: str) -> None:
    """One run of the real service in a fresh process; prints its figures as JSON."""
    os.environ["MEDIA_ROOT"] = media
    import django

    django.setup()
    from django.core.files import File
    from django.core.files.storage import default_storage

    from links import services
    from templates_sync.models import PassTemplate

    template = PassTemplate.objects.get(pk=template_id)
    started = time.perf_counter()
    with open(source, "rb") as binary:
        batch = services.link_batch_create(template=template, uploaded_by=None, file=File(binary, name="bench.csv"))
    checked = time.perf_counter()
    assert batch.mapping == dict(zip(HEADER, FIELDS)), batch.mapping
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    started_processing, cpu_started = time.perf_counter(), time.process_time()
    batch = services.link_batch_process(batch_id=batch.pk)
    finished, cpu_seconds = time.perf_counter(), time.process_time() - cpu_started
    assert batch.status == "succeeded", batch.error
    lengths = []
    with default_storage.open(batch.output_file.name, "rb") as raw:
        for number, line in enumerate(raw):
            if number and number % 97 == 0:  # a sample is enough for a median
                lengths.append(len(line.decode("utf-8").rstrip("\r\n").split(",")[-2]))
    print(json.dumps({
        "rows": batch.rows, "links": batch.links, "errors": batch.errors,
        "check_seconds": checked - started, "process_seconds": finished - started_processing,
        "cpu_seconds": cpu_seconds,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "median_link_length": statistics.median(lengths),
    }))  # fmt: skip


def run_child(template_id: str, source: Path, media: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", template_id, str(source), str(media)],
                            capture_output=True, text=True, env=os.environ.copy())  # fmt: skip
    if result.returncode:
        sys.exit(f"the service run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", default=DATABASE, help=f"the throw-away database (default {DATABASE})")
    parser.add_argument("--child", nargs=3, metavar=("TEMPLATE", "CSV", "MEDIA"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        sys.path.insert(0, str(HERE.parent))
        return child(*options.child)

    from _db import setup_django

    setup_django(options.database)
    import uuid

    from django.utils import timezone

    from templates_sync.models import PassTemplate, TemplateInputField

    now = timezone.now()
    template = PassTemplate.objects.create(id=uuid.uuid4(), type="MEMBER", name="Bench", status="ACTIVE", raw={},
                                           content_hash="-", first_seen_at=now, changed_at=now)  # fmt: skip
    formats = [("EMAIL", True), ("TEXT", True), ("PHONE_NUMBER", False)]
    for position, (identifier, (fmt, mandatory)) in enumerate(zip(FIELDS, formats)):
        TemplateInputField.objects.create(template=template, position=position, identifier=identifier,
                                          label=identifier.title(), format=fmt, type="ISSUER", is_mandatory=mandatory)  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, big = tmp / "small.csv", tmp / "big.csv"
        write_campaign(small, 100_000)
        write_campaign(big, options.rows)
        print(f"input: {options.rows:,} rows, {big.stat().st_size / 1e6:.1f} MB")

        small_run = run_child(str(template.pk), small, tmp / "media")
        big_run = run_child(str(template.pk), big, tmp / "media")
        bare_seconds, bare_cpu_seconds = bare_loop(big, tmp / "bare.csv")
        per_row_validation = validation_only(big, 50_000)

    service_rate = big_run["rows"] / big_run["process_seconds"]
    bare_rate = options.rows / bare_seconds
    print(f"service (link_batch_process), one process: {big_run['process_seconds']:.1f} s = {service_rate:,.0f} rows/s "
          f"({big_run['links']:,} links, {big_run['errors']:,} errors); upload check before it: "
          f"{big_run['check_seconds']:.1f} s")  # fmt: skip
    print(f"bare loop (csv → AES-GCM → csv), one process: {bare_seconds:.1f} s = {bare_rate:,.0f} rows/s")
    print(f"ratio service / bare, per process: {service_rate / bare_rate:.3f}")
    # On a shared machine wall time includes waiting for a CPU; the process's own CPU time does not (the
    # service's database work in PostgreSQL is not in it).
    service_cpu_rate = big_run["rows"] / big_run["cpu_seconds"]
    bare_cpu_rate = options.rows / bare_cpu_seconds
    print(f"per CPU-second of the process: service {service_cpu_rate:,.0f} rows, bare loop {bare_cpu_rate:,.0f} rows, "
          f"ratio {service_cpu_rate / bare_cpu_rate:.3f}")
    print(f"field validation alone (members.validation, email + name + phone): {per_row_validation * 1e6:.1f} µs/row "
          f"= {per_row_validation * service_rate:.0%} of the service's time per row")  # fmt: skip
    print(f"peak memory (ru_maxrss of the run's process): 100,000 rows {small_run['maxrss_kib'] / 1024:.1f} MiB; "
          f"{big_run['rows']:,} rows {big_run['maxrss_kib'] / 1024:.1f} MiB")  # fmt: skip
    print(f"median link length: {big_run['median_link_length']:.0f} characters")


if __name__ == "__main__":
    main()
