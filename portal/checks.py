"""Configuration the portal cannot run without, as Django system checks, and the start-up gate that runs them.

`manage.py check`, `migrate` and `runserver` run system checks; gunicorn and Celery do not, so portal/wsgi.py
and portal/celery.py call `refuse_to_start_misconfigured()`. Commands that must work before the secrets
exist (`generate_link_key`, and `collectstatic` at image build) run none of these checks.
"""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

MIN_SECRET_KEY_LENGTH = 50


@checks.register
def secret_key_check(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []  # settings.py gives DEBUG a fixed development key
    try:
        key = settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses to hand out an empty key
        key = ""
    if len(key) >= MIN_SECRET_KEY_LENGTH:
        return []
    return [
        checks.Error(
            f"SECRET_KEY must be set to a random string of {MIN_SECRET_KEY_LENGTH} or more characters.",
            hint="""python -c "import secrets; print(secrets.token_urlsafe(50))" prints one.""",
            id="portal.E001",
        )
    ]


def refuse_to_start_misconfigured() -> None:
    """Raise ImproperlyConfigured, naming every problem, when a system check finds an error."""
    errors = [message for message in checks.run_checks() if message.is_serious()]
    if errors:
        raise ImproperlyConfigured("\n".join(str(error) for error in errors))
