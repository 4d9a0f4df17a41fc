from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from portal.services import second_factor_reset


class Command(BaseCommand):
    help = (
        "Remove a person's second factor (authenticator and recovery codes) and end their sessions, for someone "
        "who lost their phone and codes: they set up a new one at their next login. Recorded in the sign-in "
        "events and the staff action log."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No account is named {username!r}.")
        removed = second_factor_reset(user=user, via="manage.py reset_mfa")
        self.stdout.write(
            f"Removed {removed} second-factor device{'s' if removed != 1 else ''} of {username}; "
            "they set up a new one at their next login."
        )
