import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

from portal.roles import MANAGER, VIEWER, sync_role_permissions


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo logins 'demo' (manager) and 'viewer' (viewer) with fresh random passwords "
        "and print them. For `make run` only: refused unless DEBUG is on."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo_users only runs with DEBUG on; create real staff with `manage.py create_staff`.")
        sync_role_permissions()
        User = get_user_model()
        for username, role in (("demo", MANAGER), ("viewer", VIEWER)):
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = role == MANAGER  # the manager may open the Django admin too
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            self.stdout.write(f"  {role:8} login: {username} / {password}")
