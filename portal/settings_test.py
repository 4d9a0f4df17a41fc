"""Settings for the test suite: production settings with test-only secrets and plain HTTP.

The database and broker still come from DATABASE_URL and CELERY_BROKER_URL (PostgreSQL and Redis in CI).
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "x" * 40)
os.environ.setdefault("SMARTPASS_LINK_KEYS", "test:" + "A" * 43 + "=")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
# Tests log staff in with force_login or the password form alone; the second-factor tests (portal/tests/
# test_second_factor*.py) turn it on, and production processes started by tests (production_env) have it on.
os.environ.setdefault("MFA_REQUIRED", "false")
os.environ.setdefault("CONN_MAX_AGE", "0")  # threads and live servers must not keep the test database open
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
# Uploaded and generated files go to a scratch folder; worker processes inherit it through the environment.
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="smartpass-test-media-"))

# Email counts as set up (the tests' SMTP server, conftest.smtp_server, sets where it goes); SMS only where a
# test points SMS_URL at the local Twilio stand-in.
os.environ.setdefault("EMAIL_URL", "smtp://127.0.0.1:25")
os.environ.setdefault("OUTBOX_DIR", tempfile.mkdtemp(prefix="smartpass-test-outbox-"))

# Under pytest-xdist (`make test` runs the quick suite on two processes) each test process gets a pair of
# Redis databases of its own below the configured one (gw0: 14 and 15, gw1: 12 and 13), as pytest-django gives
# it a database of its own: one process's purge or cache clear must not reach the other's.
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
# Once: processes a test starts (workers, SQLite scripts) inherit the shifted URL with the worker's name.
if (
    _xdist_worker.startswith("gw")
    and os.environ.get("CELERY_BROKER_URL", "").startswith("redis")
    and not os.environ.get("SMARTPASS_TEST_BROKER_SHIFTED")
):
    os.environ["SMARTPASS_TEST_BROKER_SHIFTED"] = "1"
    from urllib.parse import urlsplit as _urlsplit

    _broker = _urlsplit(os.environ["CELERY_BROKER_URL"])
    _db = int(_broker.path.strip("/") or 0) - 2 * int(_xdist_worker[2:])
    if _db < 0:
        raise RuntimeError(f"Too many test processes for the Redis databases below {os.environ['CELERY_BROKER_URL']}")
    os.environ["CELERY_BROKER_URL"] = _broker._replace(path=f"/{_db}").geturl()

from .settings import *  # noqa: E402,F403

STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests only
# Serve static files from the apps directly: the suite does not run collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
