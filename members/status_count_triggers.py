"""The database triggers that keep MemberStatusCount (see its docstring), for migration 0016 and for SQLite.

PostgreSQL: one statement-level trigger per operation with transition tables, so a COPY or bulk UPDATE of
50,000 members costs one grouped upsert, not 50,000; an UPDATE that changes no status writes nothing (deltas
that sum to zero are left out). The rows are upserted in (template, status) order, so two transactions lock
them in the same order. SQLite: row-level triggers (the embedded mode holds few members). SQLite drops a
table's triggers when a migration rebuilds the table (its way of altering one), so `sqlite_triggers_ensure`
runs after every migrate.
"""

COUNTS = "members_memberstatuscount"
UPSERT = (
    f"INSERT INTO {COUNTS} (template_id, status, members) "
    "SELECT template_id, status, sum(n) FROM ({deltas}) AS d GROUP BY template_id, status "
    "HAVING sum(n) <> 0 ORDER BY template_id, status "
    f"ON CONFLICT (template_id, status) DO UPDATE SET members = {COUNTS}.members + EXCLUDED.members"
)
ADDED = "SELECT template_id, status, 1 AS n FROM new_members"
TAKEN = "SELECT template_id, status, -1 AS n FROM old_members"
POSTGRESQL = {
    "insert": ("REFERENCING NEW TABLE AS new_members", ADDED),
    "update": ("REFERENCING OLD TABLE AS old_members NEW TABLE AS new_members", f"{ADDED} UNION ALL {TAKEN}"),
    "delete": ("REFERENCING OLD TABLE AS old_members", TAKEN),
}


def postgresql_statements() -> list[str]:
    statements = []
    for operation, (referencing, deltas) in POSTGRESQL.items():
        function = f"members_status_count_{operation}"
        statements += [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{UPSERT.format(deltas=deltas)}; RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS {function} ON members_member",
            f"CREATE TRIGGER {function} AFTER {operation.upper()} ON members_member {referencing} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        ]
    return statements


def _sqlite_add(row: str, by: str) -> str:
    return (
        f"INSERT INTO {COUNTS} (template_id, status, members) VALUES ({row}.template_id, {row}.status, {by}) "
        f"ON CONFLICT (template_id, status) DO UPDATE SET members = members + {by};"
    )


SQLITE = [
    f"CREATE TRIGGER IF NOT EXISTS members_status_count_insert AFTER INSERT ON members_member BEGIN "
    f"{_sqlite_add('NEW', '1')} END",
    f"CREATE TRIGGER IF NOT EXISTS members_status_count_update AFTER UPDATE OF status, template_id ON members_member "
    f"WHEN OLD.status IS NOT NEW.status OR OLD.template_id IS NOT NEW.template_id BEGIN "
    f"{_sqlite_add('OLD', '-1')} {_sqlite_add('NEW', '1')} END",
    f"CREATE TRIGGER IF NOT EXISTS members_status_count_delete AFTER DELETE ON members_member BEGIN "
    f"{_sqlite_add('OLD', '-1')} END",
]


def sqlite_triggers_ensure(using: str = "default", **kwargs) -> None:
    """post_migrate: the SQLite triggers, made again if a migration's table rebuild dropped them."""
    from django.db import connections

    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [COUNTS])
        if cursor.fetchone() is None:
            return  # before migration 0016
        for statement in SQLITE:
            cursor.execute(statement)
