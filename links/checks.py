"""SMARTPASS_LINK_KEYS as a system check: a portal that cannot make or open links is misconfigured, and says
so when it starts (portal/checks.py runs the checks for gunicorn and Celery), not at the first upload."""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .keyring import link_keys


@checks.register
def link_keys_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    link_keys.cache_clear()
    try:
        link_keys()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="links.E001")]
    return []
