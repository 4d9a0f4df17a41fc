"""The parsed SMARTPASS_LINK_KEYS, built once per process.

Parsing keys and building AES ciphers per link would cost more than encrypting the link itself, so every
caller (the CSV service, the claim flow) asks `link_keys()`. The cache is dropped when a test overrides
the setting.
"""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .tokens import KeySetError, LinkKeys, parse_link_keys


@cache
def link_keys() -> LinkKeys:
    """The key set from settings; ImproperlyConfigured with a clear sentence when it is missing or bad."""
    value = getattr(settings, "SMARTPASS_LINK_KEYS", "") or ""
    try:
        return parse_link_keys(value)
    except KeySetError as exc:
        # The message never repeats key material (parse_link_keys makes sure of that).
        raise ImproperlyConfigured(
            f"{exc} Set SMARTPASS_LINK_KEYS in the environment; `manage.py generate_link_key` prints a new entry."
        ) from None


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs) -> None:
    if setting == "SMARTPASS_LINK_KEYS":
        link_keys.cache_clear()
