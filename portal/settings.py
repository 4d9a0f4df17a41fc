"""SmartPass Portal settings.

Every value comes from the environment (optionally a `.env` file beside manage.py); the names are listed in
docs/configuration.md. Defaults are safe for production; conveniences exist only when DEBUG is on.
"""

import base64
import hashlib
import importlib.util
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from portal.renamed_settings import seconds_setting

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -------------------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
# Without DEBUG a missing or short key is refused by a system check (portal/checks.py) when a server, worker
# or `manage.py check` starts, not here: commands such as `generate_link_key` must run before it is set.
SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-dev-only-key-do-not-use-in-production" if DEBUG else "")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "portal",
    "audit",
    "background",
    "templates_sync",
    "members",
    "links",
    "delivery",
    "anymail",
]
# The local SmartPages stand-in (its `smartpages_sandbox` command) wherever it is present: the production image
# leaves the folder out, and nothing in the product imports it.
if importlib.util.find_spec("sandbox") is not None:
    INSTALLED_APPS.append("sandbox")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed the second factor.
    "django_otp.middleware.OTPMiddleware",
    # Every view needs a login unless it is marked @login_not_required: safe when a page is added.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # ...and, for a login, the second factor (MFA_REQUIRED), admin pages included.
    "portal.middleware.SecondFactorRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Idle and absolute session lifetime, and sessions ended by a password, role or account change
    # (after the messages middleware: it tells the person why they are at the login page again).
    "portal.middleware.StaffSessionLifetimeMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.StaffPagesNotStoredMiddleware",
    # One StaffAction row per change a logged-in person makes (POST and the like that succeeded).
    "audit.middleware.StaffActionMiddleware",
    # Last, as django-axes asks: it turns a login refused for too many failures into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "portal.context_processors.nav_section",
                "portal.context_processors.page_url_names",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default="sqlite:///db.sqlite3")}
# Reuse connections across requests (a claim is a handful of queries; connecting costs as much again).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded mode runs web, worker and beat against one SQLite file: wait for its lock, don't fail.
    # Transactions take the write lock when they begin (IMMEDIATE): a deferred one that read first and then
    # wrote while another process wrote got "database is locked" at once, without waiting (SQLite's way out
    # of the deadlock), e.g. a cancelled batch's assembly while the chunk processes stopped.
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (login throttling, claim rate limits) ----------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # The cache gets a database of its own on the broker's server (the next one), so clearing the cache
    # can never empty the task queue; CACHE_REDIS_URL overrides.
    _broker = urlsplit(CELERY_BROKER_URL)
    _cache_db = (int(_broker.path.strip("/") or 0) + 1) % 16
    CACHES = {
        "default": {
            # Falls back to per-process memory while Redis is away, so an outage refuses no claim or login.
            "BACKEND": "portal.resilient_cache.FallbackRedisCache",
            "LOCATION": env.str("CACHE_REDIS_URL", default=_broker._replace(path=f"/{_cache_db}").geturl()),
            # A down or hung Redis must cost a request half a second at most, not the client's default wait.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    # No Redis in the embedded mode: a file cache is shared by every process on the machine.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(BASE_DIR / "var" / "cache"),
        }
    }
RATELIMIT_USE_CACHE = "default"
# Behind a proxy, the header it sets to the client's address (e.g. X-Real-IP); see portal/client_ip.py.
CLIENT_IP_HEADER = env.str("CLIENT_IP_HEADER", default="")
RATELIMIT_IP_META_KEY = "portal.client_ip.client_ip"

# --- Auth -------------------------------------------------------------------------------------------------
# ASVS 2.1.1: at least 12 characters; Django's list of about 20,000 common passwords; nothing like the user name.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
# Login throttling by django-axes, on the cache: it counts failed authentications (the portal's login and the
# admin's alike) per client address and, separately, per normalised user name; LOGIN_RATE "10/5m" means the
# 10th failure within 5 minutes of the previous one locks that address or name out (429) until 5 minutes
# pass without another try.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_RATE = env.str("LOGIN_RATE", default="10/5m")
_login_rate = re.fullmatch(r"(\d+)/(\d*)([smh])", LOGIN_RATE)
if not _login_rate:
    raise ImproperlyConfigured(
        f"LOGIN_RATE must look like 10/5m (failures per seconds, minutes or hours), not {LOGIN_RATE!r}."
    )
AXES_FAILURE_LIMIT = int(_login_rate[1])
_login_period_unit = {"s": "seconds", "m": "minutes", "h": "hours"}[_login_rate[3]]
AXES_COOLOFF_TIME = timedelta(**{_login_period_unit: int(_login_rate[2] or 1)})
# On Redis: an attack's failures cost no database row each. The embedded mode's file cache cannot count
# atomically, so there axes keeps its counts in the database.
_redis_cache = CACHES["default"]["BACKEND"].endswith("RedisCache")
AXES_HANDLER = "axes.handlers." + ("cache.AxesCacheHandler" if _redis_cache else "database.AxesDatabaseHandler")
AXES_ENABLE_ADMIN = not _redis_cache  # its admin pages list the database handler's records
AXES_VERBOSE = False  # no banner in every process's log; failures and lock-outs are still logged
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_USERNAME_CALLABLE = "portal.login_throttle.throttled_username"
AXES_CLIENT_IP_CALLABLE = "portal.client_ip.client_ip"
AXES_LOCKOUT_CALLABLE = "portal.login_throttle.locked_out_response"
# Axes' log lines name the account and the address (its default is asterisks); a name that names no account is
# logged as "(unknown)" and a fingerprint, as the sign-in records keep it (people type passwords into that box).
AXES_SENSITIVE_PARAMETERS = ["code"]  # a second-factor code typed in, never stored by axes
AXES_CLIENT_STR_CALLABLE = "portal.login_throttle.client_str"

# --- Second factor (django-otp: TOTP apps, one-time recovery codes) ---------------------------------------
# On: every staff login asks for a code (first login: enrolment). Off (the DEBUG default, for `make run`'s demo
# logins): only people who enrolled are asked.
MFA_REQUIRED = env.bool("MFA_REQUIRED", default=not DEBUG)
OTP_TOTP_ISSUER = "SmartPass Portal"
# One throttle for passwords and codes alike: django-axes (wrong codes are failed logins to it). django-otp's own
# per-device back-off would refuse a right code typed just after a wrong one and count it as another failure.
OTP_TOTP_THROTTLE_FACTOR = 0
OTP_STATIC_THROTTLE_FACTOR = 0
MFA_RECOVERY_CODES = 10

# --- Sessions (ASVS 3.3) ----------------------------------------------------------------------------------
# A staff session ends after SESSION_IDLE_SECONDS without a request and SESSION_MAX_SECONDS after its login,
# whichever comes first (portal.middleware.StaffSessionLifetimeMiddleware).
SESSION_IDLE_SECONDS = env.int("SESSION_IDLE_SECONDS", default=1800)
SESSION_MAX_SECONDS = env.int("SESSION_MAX_SECONDS", default=43200)
SESSION_COOKIE_AGE = SESSION_MAX_SECONDS

# --- Audit records ----------------------------------------------------------------------------------------
# Sign-in records are deleted AUTH_EVENTS_DAYS after they happened; the staff action log after AUDIT_DAYS
# (0, the default: kept). A daily beat job deletes what is due.
AUTH_EVENTS_DAYS = env.int("AUTH_EVENTS_DAYS", default=365)
AUDIT_DAYS = env.int("AUDIT_DAYS", default=0)
# How the audit app learns a request's client address (it imports nothing of the product).
AUDIT_CLIENT_IP_CALLABLE = "portal.client_ip.client_ip"
# Changing requests the staff action log leaves out: signing in and out are sign-in events instead.
# Staff account changes are recorded by their services, with before and after.
AUDIT_UNRECORDED_VIEWS = {
    "login",
    "logout",
    "second_factor_verify",
    "second_factor_enrol",
    "set_language",
    "staff_invite",
    "staff_role",
    "staff_active",
    "staff_reset_mfa",
    "staff_set_password",
    "password_change",
    "recovery_codes_new",
}

# --- Security (production values by default; `check --deploy` passes) -----------------------------------
# Trusted because web is reachable only through the TLS proxy, which sets the header (docker-compose.yml keeps
# web off every published port and on a network shared with the proxy alone).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The container healthcheck asks over plain HTTP from inside the container; a redirect would read as unhealthy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# The __Host- prefix makes the browser refuse a cookie that is not Secure, has a Domain or another path: a
# sibling subdomain or a plain-HTTP page cannot plant a session or CSRF cookie.
SESSION_COOKIE_NAME = "__Host-sessionid" if SESSION_COOKIE_SECURE else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if CSRF_COOKIE_SECURE else "csrftoken"
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Scripts, styles and images from our own origin only (the QR code is inline SVG markup, not an image URL);
# no inline script or style attribute anywhere, so an injected one would not run.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- I18n (holder pages in English and Icelandic) -------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("is", "Íslenska")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Atlantic/Reykjavik"
USE_I18N = True
USE_TZ = True

# --- Static and uploaded files ----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "var" / "media")
MEDIA_URL = "media/"  # never served directly: downloads go through views that check permissions
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Web and workers on different hosts share no disk: uploads and generated CSVs then live in an S3-compatible
# bucket (private; every download still goes through the permission-checked view, which streams it).
MEDIA_S3_BUCKET = env.str("MEDIA_S3_BUCKET", default="")
if MEDIA_S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_S3_BUCKET,
            "endpoint_url": env.str("MEDIA_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("MEDIA_S3_REGION", default="") or None,
            "access_key": env.str("MEDIA_S3_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("MEDIA_S3_SECRET_ACCESS_KEY", default="") or None,
            "default_acl": "private",
            # Like the local disk: a second file under a taken name gets a new name, never overwrites.
            "file_overwrite": False,
        },
    }

# --- Celery -----------------------------------------------------------------------------------------------
if not CELERY_BROKER_URL:
    # Embedded mode for `make run`: kombu's filesystem transport needs no server, yet a real worker
    # process consumes the queue.
    _queue_dir = BASE_DIR / "var" / "celery"
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Progress and outcomes live in database rows (SyncRun, LinkBatch, Member), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=1800)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=1900)
if not CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis hands an unacknowledged (acks_late) task to another worker only after this. Two minutes above
        # the hard time limit, so a task still running is never delivered twice; a worker that died is covered
        # sooner by the sweepers and heartbeats, which re-send the recorded work.
        "visibility_timeout": CELERY_TASK_TIME_LIMIT + 120,
        "socket_connect_timeout": 2,
    }
# A request that records work and sends its task must not hang on a down broker: two quick tries, then the
# row waits for its sweeper (background.enqueue logs the failure).
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TIMEZONE = TIME_ZONE
# The queue tasks are sent to and workers consume: lets a test's workers (or a second deployment) share a Redis
# database without taking each other's tasks.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")
# Write the schedule file after every send, not every few minutes (the send keys of portal/beat.py still
# cover a beat killed between a send and that write, or started with a fresh file).
CELERY_BEAT_SYNC_EVERY = 1

# --- SmartPages upstream ----------------------------------------------------------------------------------
SMARTPAGES_API_URL = env.str("SMARTPAGES_API_URL", default="https://smartpages-api.smartsolutions.is").rstrip("/")
SMARTPAGES_KEY_ID = env.str("SMARTPAGES_KEY_ID", default="")
SMARTPAGES_KEY_TOKEN = env.str("SMARTPAGES_KEY_TOKEN", default="")
SMARTPAGES_PAGE_SIZE = env.int("SMARTPAGES_PAGE_SIZE", default=100)
SMARTPAGES_TIMEOUT = (
    env.float("SMARTPAGES_CONNECT_TIMEOUT", default=5.0),
    env.float("SMARTPAGES_READ_TIMEOUT", default=30.0),
)
# Calls made while a holder or staff member waits (claims, "Add member"): shorter, so a slow SmartPages leaves
# the member pending for the retry task instead of outlasting gunicorn's timeout (deploy/gunicorn.conf.py).
SMARTPAGES_REQUEST_TIMEOUT = (
    env.float("SMARTPAGES_REQUEST_CONNECT_TIMEOUT", default=3.0),
    env.float("SMARTPAGES_REQUEST_READ_TIMEOUT", default=10.0),
)
# The longest Retry-After a worker's call waits out before its next try (urllib3 alone would wait up to six
# hours); SMARTPAGES_DEADLINE below bounds the whole call.
SMARTPAGES_RETRY_AFTER_MAX = env.int("SMARTPAGES_RETRY_AFTER_MAX", default=10)
# The total time one SmartPages call may take, its retries and Retry-After waits included (the timeouts above
# are per attempt, and a read timeout per socket read: an upstream dripping a byte at a time never trips it).
# While a person waits (claims, "Add member"): then the member waits as pending for the retry task.
SMARTPAGES_REQUEST_DEADLINE = env.float("SMARTPAGES_REQUEST_DEADLINE", default=12.0)
SMARTPAGES_DEADLINE = env.float("SMARTPAGES_DEADLINE", default=120.0)
# The largest reply accepted, counted after decompression (a template page of 100 is ~200 kB).
SMARTPAGES_MAX_REPLY_BYTES = env.int("SMARTPAGES_MAX_REPLY_BYTES", default=20_000_000)
TEMPLATE_SYNC_INTERVAL = env.int("TEMPLATE_SYNC_INTERVAL", default=900)

# --- Background work: heartbeats, take-over, the recovery sweep (docs/operations.md) ------------------------
# Every kind of recorded work (link chunks and batches, template syncs, member refresh, bulk actions) beats every
# RUN_HEARTBEAT_SECONDS from a thread of its own while it works; one silent for RUN_STALE_SECONDS lost its worker
# and is taken over by the next sweep. The sweep runs every SWEEP_INTERVAL, so a dead worker's work starts again
# within RUN_STALE_SECONDS + SWEEP_INTERVAL (25 s by default). The old LINKS_* and TEMPLATE_SYNC_* pairs are
# still read, with a DeprecationWarning, for one release.
RUN_HEARTBEAT_SECONDS = seconds_setting(
    "RUN_HEARTBEAT_SECONDS", old_names=("LINKS_HEARTBEAT_SECONDS", "TEMPLATE_SYNC_HEARTBEAT_SECONDS"), default=3.0
)
RUN_STALE_SECONDS = seconds_setting(
    "RUN_STALE_SECONDS", old_names=("LINKS_STALE_SECONDS", "TEMPLATE_SYNC_STALE_SECONDS"), default=15.0
)
if not 0 < RUN_HEARTBEAT_SECONDS * 2 <= RUN_STALE_SECONDS:
    # A live worker must be able to miss a beat (a slow query) without looking dead.
    raise ImproperlyConfigured("RUN_STALE_SECONDS must be at least twice RUN_HEARTBEAT_SECONDS.")
# Seconds between the beat sweeps that send again recorded work whose task was lost, and how long queued work
# may wait before a sweep sends it again. Retries due later (pending members, a failed sync) wait in their rows,
# never as delayed messages a worker holds, and the sweep sends them once they are due.
SWEEP_INTERVAL = env.float("SWEEP_INTERVAL", default=10.0)
SWEEP_OVERDUE_AFTER = env.int("SWEEP_OVERDUE_AFTER", default=30)
# A bulk action or refresh chunk task starts no new member after RUN_SLICE_SECONDS: it hands the rest to a fresh
# task of itself. With one upstream call bounded (templates_sync.client: about five minutes at worst), a task
# stays well inside CELERY_TASK_SOFT_TIME_LIMIT however large the action.
RUN_SLICE_SECONDS = env.float("RUN_SLICE_SECONDS", default=600.0)
# The sweeps of background.recovery, by name: beat's one entry sends each as a task of its own.
RECOVERY_SWEEPS = {
    "sync-runs-queued": "templates_sync.services.sync_runs_resend_queued",
    "sync-runs-stale": "templates_sync.services.sync_runs_recover_stale",
    "members-due": "members.services.issuing.member_issue_retries_send_due",
    "members-pending": "members.services.issuing.member_issue_retry_stale",
    "autofill-backfills": "members.services.autofill.autofill_backfills_resend_queued",
    "bulk-actions": "members.services.bulk.member_bulk_actions_sweep",
    "member-refresh-runs": "members.services.refresh.member_refresh_runs_sweep",
    "link-batches": "links.services.link_batches_sweep",
    "link-batch-sends": "links.services.sending.batch_sends_sweep",
    "delivery": "delivery.sending.delivery_sweep",
}
CELERY_BEAT_SCHEDULE = {
    "sync-all-templates": {
        "task": "templates_sync.sync_all_templates",
        "schedule": float(TEMPLATE_SYNC_INTERVAL),
        "kwargs": {"trigger": "beat"},
    },
    # Work is recorded in a row before its task is sent; this sends again what a lost task left behind.
    "sweep-recorded-work": {"task": "background.sweep_recorded_work", "schedule": SWEEP_INTERVAL},
    # Sign-in records past AUTH_EVENTS_DAYS (and staff actions past AUDIT_DAYS, when set) are deleted.
    "delete-expired-audit-records": {"task": "audit.delete_expired_records", "schedule": 24 * 3600.0},
    # The dashboard's counts kept as claims and members change (per day, per status), checked against real
    # counts: drift from writes outside the portal (an import, a manual fix) lasts an hour at most.
    "reconcile-dashboard-counts": {"task": "portal.reconcile_dashboard_counts", "schedule": 3600.0},
}
# A restarted beat never sends an entry twice within its interval (portal/beat.py).
CELERY_BEAT_SCHEDULER = "portal.beat.OnceScheduler"
# The member refresh job: every issued member's pass read again from SmartPages, stalest first, never faster
# than MEMBER_REFRESH_RATE requests per second across all workers together (a limiter shared in Redis).
MEMBER_REFRESH_INTERVAL = env.int("MEMBER_REFRESH_INTERVAL", default=3600)
MEMBER_REFRESH_RATE = env.float("MEMBER_REFRESH_RATE", default=10.0)
# Per process when the shared limiter's Redis cannot be reached: low enough for ten workers together.
MEMBER_REFRESH_FALLBACK_RATE = env.float("MEMBER_REFRESH_FALLBACK_RATE", default=MEMBER_REFRESH_RATE / 10)
MEMBER_REFRESH_CHUNK = env.int("MEMBER_REFRESH_CHUNK", default=200)  # members per task
CELERY_BEAT_SCHEDULE["refresh-members"] = {
    "task": "members.member_refresh_start",
    "schedule": float(MEMBER_REFRESH_INTERVAL),
    "kwargs": {"trigger": "beat"},
}

# --- Uploads ---------------------------------------------------------------------------------------------
# An upload above FILE_UPLOAD_MAX_MEMORY_SIZE waits in a temporary file of the portal's own folder, which the web
# process cleans of files older than an hour (portal/uploads.py): a web worker killed mid-upload leaves no
# holder data behind for long.
FILE_UPLOAD_TEMP_DIR = env.str("FILE_UPLOAD_TEMP_DIR", default=str(BASE_DIR / "var" / "uploads"))
try:  # Django's system check (files.E001) wants it to exist before any upload arrives
    Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
except OSError:
    pass  # a read-only place: the check names it, which is the right message
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "portal.uploads.CleaningTemporaryFileUploadHandler",
]

# --- SmartPass links --------------------------------------------------------------------------------------
SMARTPASS_LINK_KEYS = env.str("SMARTPASS_LINK_KEYS", default="")
if not SMARTPASS_LINK_KEYS and DEBUG:
    # A development key derived from SECRET_KEY, so links survive restarts of `make run`.
    _dev_key = hashlib.sha256(("smartpass-link-dev-key:" + SECRET_KEY).encode()).digest()
    SMARTPASS_LINK_KEYS = "dev:" + base64.b64encode(_dev_key).decode()
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="IS")
# Campaign CSV uploads: a million rows of name, email and phone is about 70 MB.
LINKS_MAX_UPLOAD_BYTES = env.int("LINKS_MAX_UPLOAD_BYTES", default=100 * 1024 * 1024)
LINKS_MAX_ROWS = env.int("LINKS_MAX_ROWS", default=1_000_000)
# Columns of a campaign CSV: each one is a row of the mapping page.
LINKS_MAX_COLUMNS = env.int("LINKS_MAX_COLUMNS", default=200)
# A batch is cut into chunks of this many rows, made by any number of workers in parallel: a worker that
# dies costs one chunk, and a million rows give the workers 20 pieces to share.
LINKS_CHUNK_ROWS = env.int("LINKS_CHUNK_ROWS", default=50_000)
# Claim requests (GET and POST of /p/<token>) allowed per client address before a 429 page.
CLAIM_RATE = env.str("CLAIM_RATE", default="60/m")
# "Send my pass to …" (a holder who typed an address that already has a pass): sends allowed per member and,
# separately, per address on file, per hour.
PASS_LINK_SENDS_PER_HOUR = env.int("PASS_LINK_SENDS_PER_HOUR", default=3)
# How a holder reaches the issuer, shown where their pass cannot be sent (no SMS) and on a cancelled pass's page;
# a template's own text wins.
HOLDER_CONTACT_HELP = env.str("HOLDER_CONTACT_HELP", default="")

# --- Delivery: email and SMS to holders (docs/configuration.md, "Delivery") -----------------------------------
# Email goes through Django's email framework: an SMTP relay named by EMAIL_URL (django-environ's email_url:
# smtp://, smtp+tls://, smtp+ssl://), or an email service through django-anymail (ANYMAIL_BACKEND, with its
# settings as ANYMAIL_<NAME> variables: ANYMAIL_POSTMARK_SERVER_TOKEN, ANYMAIL_WEBHOOK_SECRET …). In DEBUG with
# neither, every email (and SMS) is written to the local outbox, OUTBOX_DIR, listed on the Outbox page.
EMAIL_URL = env.str("EMAIL_URL", default="")
ANYMAIL_BACKEND = env.str("ANYMAIL_BACKEND", default="")
OUTBOX_DIR = env.str("OUTBOX_DIR", default=str(BASE_DIR / "var" / "outbox"))
if ANYMAIL_BACKEND:
    EMAIL_BACKEND = ANYMAIL_BACKEND
elif EMAIL_URL:
    globals().update(environ.Env.email_url_config(EMAIL_URL))
elif DEBUG:
    EMAIL_BACKEND = "delivery.outbox.OutboxEmailBackend"
EMAIL_CONFIGURED = bool(EMAIL_URL or ANYMAIL_BACKEND)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # seconds for each SMTP exchange: a hung relay fails fast
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
ANYMAIL = {
    name.removeprefix("ANYMAIL_"): value
    for name, value in env.ENVIRON.items()
    if name.startswith("ANYMAIL_") and name != "ANYMAIL_BACKEND"
}
# SMS through Twilio's Messages REST API: twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com?from=SENDER (or
# twilio+http://…@127.0.0.1:PORT for a local server that speaks the same API). Unset: SMS is off (DEBUG: outbox).
SMS_URL = env.str("SMS_URL", default="")
if SMS_URL:
    from delivery.sms import parse_sms_url  # noqa: E402 - checked at start: a wrong URL must not wait for a send

    try:
        parse_sms_url(SMS_URL)
    except ValueError as exc:
        raise ImproperlyConfigured(f"SMS_URL: {exc}") from None
# Messages a second across every worker together (the shared limiter of background.rate_limit).
EMAIL_RATE = env.float("EMAIL_RATE", default=20.0)
SMS_RATE = env.float("SMS_RATE", default=5.0)
# Tasks sent for each queued send: how many workers may send one channel in parallel (the rate still holds).
DELIVERY_SENDERS = env.int("DELIVERY_SENDERS", default=2)
# First wait before a transient failure is tried again; it doubles each time, MAX_ATTEMPTS tries in all.
DELIVERY_RETRY_SECONDS = env.float("DELIVERY_RETRY_SECONDS", default=30.0)

# --- Logging ----------------------------------------------------------------------------------------------
# One format and one level (LOG_LEVEL) for web and Celery alike (portal/celery.py hands Celery this config).
# Claim tokens and pass-page keys are bearer secrets: the filter cuts them to a prefix in every record,
# whichever logger wrote it (Django logs the path of every 404: "Not Found: /p/<token>").
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"secret_paths": {"()": "portal.log_redaction.SecretPathFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["secret_paths"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}, "botocore": {"level": "WARNING"}},
}
