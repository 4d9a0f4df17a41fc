"""Benchmark plumbing: a throw-away PostgreSQL database per benchmark, migrated, with Django set up."""

import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(database: str, *, keep: bool = False) -> bool:
    """Recreate `database` on the local PostgreSQL (BENCH_PG, default postgres@127.0.0.1:5432), migrate it.

    With `keep`, an existing `database` is kept (and migrated). Returns whether it was kept."""
    import psycopg

    server = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        kept = keep and conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is not None
        if not kept:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return kept


def mirror_template(name: str, fields: list[tuple[str, str, bool]] = ()):
    """A template written straight into the mirror, with these (identifier, format, mandatory) ISSUER input
    fields in this order; nothing from SmartPages (call after setup_django)."""
    import uuid

    from django.utils import timezone

    from templates_sync.models import PassTemplate

    now = timezone.now()
    template_id = uuid.uuid4()
    input_fields = [
        {
            "identifier": identifier,
            "label": identifier.title(),
            "format": fmt,
            "type": "ISSUER",
            "isMandatory": mandatory,
        }
        for identifier, fmt, mandatory in fields
    ]
    return PassTemplate.objects.create(
        id=template_id,
        type="MEMBER",
        name=name,
        status="ACTIVE",
        raw={"id": str(template_id), "name": name, "inputFields": input_fields},
        content_hash="-",
        first_seen_at=now,
        changed_at=now,
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
