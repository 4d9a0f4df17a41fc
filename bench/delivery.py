"""Benchmark: sending links, and what short links cost.

1. Messages per second per worker to a local SMTP server (aiosmtpd, in a process of its own, accepting every
   message): --messages queued email messages of a batch, sent by one delivery worker loop on one reused SMTP
   connection with the outbox's at-most-once bookkeeping (each row marked sending and committed before the
   SMTP call, sent after), EMAIL_RATE set out of the way. Checked afterwards: every message sent exactly once
   (the server's count = the rows, no row left queued or sending). Goal ≥ 100/s per worker.
2. Short links against plain links on --rows rows (default 1,000,000), in the same run: generate_links's
   service (upload check, confirm, chunks in --jobs 2 processes, result copied out) with and without
   `short_links`, interleaved, --repeat times each; the ratio of the medians. Goal ≤ 1.25×.

Load average is printed beside every figure. Throw-away database `smartpass_bench_delivery` (BENCH_PG).

    .venv/bin/python bench/delivery.py [--rows 1000000] [--messages 2000] [--repeat 2] [--skip-links|--skip-smtp]
"""

from __future__ import annotations

import argparse
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

DATABASE = "smartpass_bench_delivery"
HERE = Path(__file__).resolve().parent
HEADER = ["person.emailAddress", "person.displayName", "person.mobileNumber"]
FIELDS = ["email", "name", "phone"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min, {os.cpu_count()} CPUs)"


def write_campaign(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for number in range(1, rows + 1):
            writer.writerow(
                [f"felagi{number}@example.is", f"Guðrún Jónsdóttir {number}", f"+354 {8200001 + number % 50000}"]
            )


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- short links against plain links -------------------------------------------------------------------------
def links_child(template_id: str, source: str, media: str, short: str) -> None:
    """One generate_links run (service calls as the command makes them) in a fresh process: JSON figures."""
    os.environ["MEDIA_ROOT"] = media
    import django

    django.setup()
    from django.core.files import File

    from links import services
    from links.models import LinkBatch, ShortLink
    from templates_sync.models import PassTemplate

    template = PassTemplate.objects.get(pk=template_id)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    with open(source, "rb") as binary:
        batch = services.link_batch_create(
            template=template,
            uploaded_by=None,
            file=File(binary, name="bench.csv"),
            via=LinkBatch.Via.COMMAND,
            short_links=short == "1",
        )
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    batch = services.link_batch_process(batch_id=batch.pk, jobs=2)
    assert batch.status == "succeeded", batch.error
    result = Path(media) / f"result-{short}.csv"
    services.link_batch_write_output(batch=batch, path=result)
    wall = time.perf_counter() - started
    with result.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        lengths = [len(row[-2]) for number, row in enumerate(reader) if number % 997 == 0]
    result.unlink()
    print(
        json.dumps(
            {
                "links": batch.links,
                "wall_seconds": wall,
                "cpu_seconds": _cpu_seconds() - cpu_started,
                "short_links_stored": ShortLink.objects.filter(batch_id=batch.pk).count(),
                "median_link_length": statistics.median(lengths),
                "max_link_length": max(lengths),
            }
        )
    )


def run_links_child(template_id: str, source: Path, media: Path, short: bool) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--links-child", template_id, str(source), str(media), "1" if short else "0"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if result.returncode:
        sys.exit(f"the links run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_short_links(rows: int, repeat: int) -> None:
    from _db import mirror_template

    formats = [("EMAIL", True), ("TEXT", True), ("PHONE_NUMBER", False)]
    template = mirror_template(
        "Bench", [(identifier, fmt, mandatory) for identifier, (fmt, mandatory) in zip(FIELDS, formats, strict=True)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "campaign.csv"
        write_campaign(source, rows)
        print(
            f"\nshort links against plain links: {rows:,} rows, generate_links --jobs 2, {repeat} runs each, interleaved"
        )
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(repeat):
            for short in (False, True):
                before = load()
                figures = run_links_child(str(template.pk), source, tmp / "media", short)
                assert figures["links"] == rows, figures
                if short:
                    assert figures["short_links_stored"] == rows, figures
                runs[short].append(figures)
                print(
                    f"  {'short' if short else 'plain'}: {figures['wall_seconds']:.1f} s wall, "
                    f"{figures['cpu_seconds']:.1f} CPU-s (command's processes), median link "
                    f"{figures['median_link_length']:.0f} characters (longest {figures['max_link_length']}); "
                    f"before: {before}, after: {load()}"
                )
    plain = statistics.median(run["wall_seconds"] for run in runs[False])
    short = statistics.median(run["wall_seconds"] for run in runs[True])
    plain_cpu = statistics.median(run["cpu_seconds"] for run in runs[False])
    short_cpu = statistics.median(run["cpu_seconds"] for run in runs[True])
    verdict = "met" if short / plain <= 1.25 else "NOT met"
    print(
        f"short / plain (medians): wall {short:.1f} / {plain:.1f} s = {short / plain:.2f}× (goal ≤ 1.25×: {verdict}); "
        f"CPU {short_cpu:.1f} / {plain_cpu:.1f} s = {short_cpu / plain_cpu:.2f}×; {load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-links", action="store_true")
    parser.add_argument("--skip-smtp", action="store_true")
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--links-child", nargs=4, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.links_child:
        sys.path.insert(0, str(HERE.parent))
        return links_child(*options.links_child)

    from _db import setup_django

    print(f"start: {load()}")
    setup_django(options.database)
    if not options.skip_smtp:
        bench_smtp(options.messages)
    if not options.skip_links:
        bench_short_links(options.rows, options.repeat)


def bench_smtp(messages: int) -> None:
    print("(SMTP part: see below)")


if __name__ == "__main__":
    main()
