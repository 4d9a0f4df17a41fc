import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from portal.services import ROLES, staff_account_save


class Command(BaseCommand):
    stealth_options = ("stdin",)
    help = (
        "Make or update a staff account in a role: viewer (reads everything), manager (also syncs, changes "
        "settings, uploads campaigns, acts on members) or admin (a manager who also manages staff and reads the "
        "sign-in events and staff action log). The password is asked for on the terminal, or read "
        "from the first line of standard input with --password-stdin; it must pass the password rules. For an "
        "existing account an empty password keeps the current one. Never makes a superuser."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--email", help="the account's email address")
        parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    def handle(self, *args, username, role, email, password_stdin, **options):
        stdin = options.get("stdin", sys.stdin)  # call_command(stdin=...) in tests, like createsuperuser
        password = self._read_password(stdin) if password_stdin else self._ask_password(stdin)
        try:
            saved = staff_account_save(username=username, role=role, email=email, password=password or None)
        except ValidationError as exc:
            raise CommandError("Password refused: " + " ".join(exc.messages)) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verb = "Created" if saved.created else "Updated"
        self.stdout.write(f"{verb} {saved.user.get_username()} as {role}.")

    def _read_password(self, stdin) -> str:
        return stdin.readline().rstrip("\r\n")

    def _ask_password(self, stdin) -> str:
        if not stdin.isatty():
            raise CommandError("No terminal to ask for the password on: use --password-stdin.")
        password = getpass.getpass("Password (empty keeps an existing account's): ")
        if password and getpass.getpass("Password again: ") != password:
            raise CommandError("The two passwords differ; nothing was changed.")
        return password
