from django.core.management.base import BaseCommand

from links.tokens import generate_key_entry


class Command(BaseCommand):
    help = (
        "Print a new 'id:base64key' entry for SMARTPASS_LINK_KEYS. To rotate keys, put the new entry first "
        "and keep the old ones after it: the first key encrypts new links, every key still opens old ones. "
        "Works before SECRET_KEY and SMARTPASS_LINK_KEYS are set: it is how the first key is made."
    )
    requires_system_checks = ()  # the checks refuse a missing key, which is what this command makes

    def add_arguments(self, parser):
        parser.add_argument("--id", dest="key_id", help="key id (default: k + today's date, e.g. k20260301)")

    def handle(self, *args, key_id=None, **options):
        self.stdout.write(generate_key_entry(key_id))
