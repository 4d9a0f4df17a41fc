"""Benchmark plumbing: a throw-away PostgreSQL database per benchmark, migrated, with Django set up."""

import os
import sys
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
