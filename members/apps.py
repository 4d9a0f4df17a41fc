from django.apps import AppConfig
from django.db.backends.signals import connection_created


class MembersConfig(AppConfig):
    name = "members"
    verbose_name = "Members"

    def ready(self) -> None:
        from .collation import register_sqlite_collation

        # SQLite has no ICU: the Icelandic name order is registered on each of its connections.
        connection_created.connect(register_sqlite_collation, dispatch_uid="members.icelandic_collation")
