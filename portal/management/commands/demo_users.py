import secrets

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.roles import MANAGER, VIEWER
from portal.services import staff_account_save


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo logins 'demo' (manager) and 'viewer' (viewer) with fresh random passwords "
        "and print them. For `make run` only: refused unless DEBUG is on."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo_users only runs with DEBUG on; create real staff with `manage.py create_staff`.")
        for username, role in (("demo", MANAGER), ("viewer", VIEWER)):
            password = secrets.token_urlsafe(9)
            staff_account_save(username=username, role=role, password=password)
            self.stdout.write(f"  {role:8} login: {username} / {password}")
