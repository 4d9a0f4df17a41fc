"""Benchmark: sending links, and what short links cost.

1. Messages per second per worker to a local SMTP server (aiosmtpd, in a process of its own, accepting every
   message): --messages queued email messages of a batch, sent by one delivery worker loop on one reused SMTP
   connection with the outbox's at-most-once bookkeeping (each row marked sending and committed before the
   SMTP call, sent after), EMAIL_RATE set out of the way. Checked afterwards: every message sent exactly once
   (the server's count = the rows, no row left queued or sending). Goal ≥ 100/s per worker.
2. Short links against plain links on --rows rows (default 1,000,000), in the same run: generate_links's
   service (upload check, confirm, chunks in --jobs 2 processes, result copied out) with and without
   `short_links`, interleaved, --repeat times each; the ratio of the medians. Goal ≤ 1.25×.

Load average is printed beside every figure. Throw-away database `smartpass_bench_delivery` (BENCH_PG), Redis
databases 6 and 7 (BENCH_BROKER) for the shared rate limiter and the queue.

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

from _db import BackendCpu  # bench/ is on sys.path: the scripts run as `python bench/NAME.py`

DATABASE = "smartpass_bench_delivery"
# Databases 6 and 7 (the cache takes the next): clear of the test suite's 8-15 and a local stack's 0.
BENCH_BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/6")
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
    # PostgreSQL's share (the COPY of the short links lands there), as bench/links.py reads it.
    backends = BackendCpu(DATABASE)
    backends.look()
    before = sum(backends.seen.values()) / os.sysconf("SC_CLK_TCK")
    backends.start()
    result = subprocess.run(
        [sys.executable, __file__, "--links-child", template_id, str(source), str(media), "1" if short else "0"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if result.returncode:
        sys.exit(f"the links run failed:\n{result.stderr}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["postgres_cpu_seconds"] = backends.seconds() - before
    return figures


def bench_short_links(rows: int, repeat: int) -> None:
    from _db import mirror_template

    from links.models import ShortLink

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
                # Every short run adds its codes to the same table (as a deployment's campaigns do): the later
                # runs insert into a larger index.
                codes_before = ShortLink.objects.count()
                figures = run_links_child(str(template.pk), source, tmp / "media", short)
                assert figures["links"] == rows, figures
                if short:
                    assert figures["short_links_stored"] == rows, figures
                runs[short].append(figures)
                print(
                    f"  {'short' if short else 'plain'}: {figures['wall_seconds']:.1f} s wall, "
                    f"{figures['cpu_seconds']:.1f} CPU-s in the command's processes + "
                    f"{figures['postgres_cpu_seconds']:.1f} in PostgreSQL, median link "
                    f"{figures['median_link_length']:.0f} characters (longest {figures['max_link_length']})"
                    + (f", {codes_before:,} codes in the table before" if short else "")
                    + "; "
                    f"before: {before}, after: {load()}"
                )
    plain = statistics.median(run["wall_seconds"] for run in runs[False])
    short = statistics.median(run["wall_seconds"] for run in runs[True])
    plain_cpu = statistics.median(run["cpu_seconds"] + run["postgres_cpu_seconds"] for run in runs[False])
    short_cpu = statistics.median(run["cpu_seconds"] + run["postgres_cpu_seconds"] for run in runs[True])
    verdict = "met" if short / plain <= 1.25 else "NOT met"
    print(
        f"short / plain (medians): wall {short:.1f} / {plain:.1f} s = {short / plain:.2f}× (goal ≤ 1.25×: {verdict}); "
        f"CPU (command + PostgreSQL) {short_cpu:.1f} / {plain_cpu:.1f} s = {short_cpu / plain_cpu:.2f}×; {load()}"
    )


# --- messages per second per worker ---------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_smtp(folder: Path) -> tuple[subprocess.Popen, int]:
    """sandbox/smtp.py (aiosmtpd), a process of its own, writing each accepted message to `folder`."""
    import socket

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.smtp", "--port", str(port), "--folder", str(folder)],
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("the SMTP server did not start")


def bench_smtp(messages: int, repeat: int, folder: Path) -> None:
    """Queue `messages` email messages of a real batch (send_links's service), then time one worker loop
    (delivery.sending.send_queued) sending them all; against a bare loop sending the same messages with the
    same backend on one connection and no bookkeeping. Checked: exactly one copy of each at the server."""
    from _db import mirror_template
    from django.core import mail
    from django.core.files import File

    from delivery import sending as delivery_sending
    from delivery.models import EMAIL, Message
    from delivery.transports import build_email
    from links import services
    from links.models import LinkBatch
    from links.services import sending

    formats = [("EMAIL", True), ("TEXT", True), ("PHONE_NUMBER", False)]
    template = mirror_template(
        "Bench mail",
        [(identifier, fmt, mandatory) for identifier, (fmt, mandatory) in zip(FIELDS, formats, strict=True)],
    )
    source = folder.parent / "mail-campaign.csv"
    write_campaign(source, messages)
    with source.open("rb") as binary:
        batch = services.link_batch_create(
            template=template, uploaded_by=None, file=File(binary, name="mail.csv"), via=LinkBatch.Via.COMMAND
        )
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    batch = services.link_batch_process(batch_id=batch.pk, jobs=1)
    options = sending.SendOptions(channels=("email",), columns=sending.send_columns_guess(batch=batch))
    print(
        f"\nemail to a local aiosmtpd server (sandbox/smtp.py, own process): {messages:,} messages of a batch, {repeat} runs"
    )
    worker_rates, bare_rates = [], []
    for attempt in range(repeat):
        Message.objects.all().delete()
        for path in folder.glob("*.eml"):
            path.unlink()
        result = sending.batch_send(batch=batch, options=options)
        assert result.queued == messages, result
        before = load()
        started, cpu = time.perf_counter(), time.process_time()
        sent = delivery_sending.send_queued(EMAIL)
        worker_seconds, worker_cpu = time.perf_counter() - started, time.process_time() - cpu
        received = sum(1 for _ in folder.glob("*.eml"))
        rows = Message.objects.filter(status=Message.SENT, attempts=1).count()
        assert sent == messages == received == rows, (sent, messages, received, rows)
        # The bare loop: the same messages, built and sent the same way, nothing recorded.
        bodies = list(Message.objects.order_by("pk"))
        for path in folder.glob("*.eml"):
            path.unlink()
        started, cpu = time.perf_counter(), time.process_time()
        connection = mail.get_connection(fail_silently=False)
        connection.open()
        for message in bodies:
            build_email(message, connection=connection).send()
        connection.close()
        bare_seconds, bare_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert sum(1 for _ in folder.glob("*.eml")) == messages
        worker_rates.append(messages / worker_seconds)
        bare_rates.append(messages / bare_seconds)
        print(
            f"  run {attempt + 1}: worker {messages / worker_seconds:,.0f} messages/s ({worker_seconds:.1f} s, "
            f"{worker_cpu:.1f} CPU-s here), each sent once: {received:,} at the server, {rows:,} rows sent on the "
            f"first attempt; bare loop {messages / bare_seconds:,.0f}/s ({bare_seconds:.1f} s, {bare_cpu:.1f} CPU-s); "
            f"before: {before}, after: {load()}"
        )
    worker, bare = statistics.median(worker_rates), statistics.median(bare_rates)
    verdict = "met" if worker >= 100 else "NOT met"
    print(
        f"one worker (median): {worker:,.0f} messages/s (goal ≥ 100/s: {verdict}); bare loop {bare:,.0f}/s; "
        f"worker / bare = {worker / bare:.2f}; {load()}"
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

    print(f"start: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        inbox = Path(tmp) / "inbox"
        inbox.mkdir()
        smtp, port = start_smtp(inbox)
        try:
            # Before Django starts: the outbox reads these settings once.
            os.environ["EMAIL_URL"] = f"smtp://127.0.0.1:{port}"
            os.environ["EMAIL_RATE"] = "1000000"  # the limiter's wait out of the way: the worker's own speed
            # Redis as in production: the shared limiter's round trip per message is part of a worker's cost,
            # and the send's nudges go to a queue no worker reads (emptied here), not to the embedded broker.
            os.environ["CELERY_BROKER_URL"] = BENCH_BROKER
            import redis

            redis.Redis.from_url(BENCH_BROKER).flushdb()
            os.environ["DEFAULT_FROM_EMAIL"] = "passar@bench.example"
            os.environ["MEDIA_ROOT"] = str(Path(tmp) / "media")
            from _db import setup_django

            setup_django(options.database)
            if not options.skip_smtp:
                bench_smtp(options.messages, options.repeat, inbox)
        finally:
            smtp.terminate()
            smtp.wait()
    if not options.skip_links:
        bench_short_links(options.rows, options.repeat)


if __name__ == "__main__":
    main()
