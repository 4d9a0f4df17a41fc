import sys

from django.apps import AppConfig


class LinksConfig(AppConfig):
    name = "links"
    verbose_name = "SmartPass links"

    def ready(self) -> None:
        from .keyring import link_keys

        # Fail at start-up, not at the first upload or claim: a portal that cannot make or read links is
        # misconfigured, and the message says how to fix it. (settings.py derives a dev key under DEBUG.)
        # The one exception is the command that makes the first key.
        if sys.argv[1:2] == ["generate_link_key"]:
            return
        link_keys.cache_clear()
        link_keys()
