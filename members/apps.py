from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


class MembersConfig(AppConfig):
    name = "members"
    verbose_name = "Members"

    def ready(self) -> None:
        from .collation import register_sqlite_collation
        from .status_count_triggers import sqlite_triggers_ensure

        # SQLite has no ICU: the Icelandic name order is registered on each of its connections.
        connection_created.connect(register_sqlite_collation, dispatch_uid="members.icelandic_collation")
        # A migration that rebuilds members_member on SQLite drops its triggers: made again after each migrate.
        post_migrate.connect(sqlite_triggers_ensure, sender=self, dispatch_uid="members.status_count_triggers")
