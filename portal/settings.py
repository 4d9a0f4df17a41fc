"""SmartPass Portal settings.

Every value comes from the environment (optionally a `.env` file beside manage.py); the names are listed in
the README's Configuration table. Defaults are safe for production; conveniences exist only when DEBUG is on.
"""
import base64
import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# --- Core -------------------------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
if DEBUG:
    SECRET_KEY = env.str("SECRET_KEY", default="django-insecure-dev-only-key-do-not-use-in-production")
else:
    SECRET_KEY = env.str("SECRET_KEY", default="")
    if len(SECRET_KEY) < 50:
        raise ImproperlyConfigured("SECRET_KEY must be set to a random string of 50 or more characters.")
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
    "portal",
    "templates_sync",
    "members",
    "links",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every view needs a login unless it is marked @login_not_required: safe when a page is added.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
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
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str("CACHE_REDIS_URL", default=_broker._replace(path=f"/{_cache_db}").geturl()),
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
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
# Failed logins allowed per client address and per user name before the login form answers 429.
LOGIN_RATE = env.str("LOGIN_RATE", default="10/5m")

# --- Security (production values by default; `check --deploy` passes) -----------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

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
else:
    # Above the longest task's time limit, so a slow task is not delivered twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Progress and outcomes live in database rows (SyncRun, LinkBatch, Member), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 1800
CELERY_TASK_TIME_LIMIT = 1900
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(BASE_DIR / "var" / "celerybeat-schedule")

# --- SmartPages upstream ----------------------------------------------------------------------------------
SMARTPAGES_API_URL = env.str("SMARTPAGES_API_URL", default="https://smartpages-api.smartsolutions.is").rstrip("/")
SMARTPAGES_KEY_ID = env.str("SMARTPAGES_KEY_ID", default="")
SMARTPAGES_KEY_TOKEN = env.str("SMARTPAGES_KEY_TOKEN", default="")
SMARTPAGES_PAGE_SIZE = env.int("SMARTPAGES_PAGE_SIZE", default=100)
SMARTPAGES_TIMEOUT = (env.float("SMARTPAGES_CONNECT_TIMEOUT", default=5.0), env.float("SMARTPAGES_READ_TIMEOUT", default=30.0))
TEMPLATE_SYNC_INTERVAL = env.int("TEMPLATE_SYNC_INTERVAL", default=900)
# A full sync still marked running after this long is taken as abandoned (its worker died).
TEMPLATE_SYNC_LOCK_SECONDS = env.int("TEMPLATE_SYNC_LOCK_SECONDS", default=1800)
CELERY_BEAT_SCHEDULE = {
    "sync-all-templates": {
        "task": "templates_sync.sync_all_templates",
        "schedule": float(TEMPLATE_SYNC_INTERVAL),
        "kwargs": {"trigger": "beat"},
    },
    # A safety net for claims whose retry task was lost (e.g. the broker was down when it was enqueued).
    "retry-stale-pending-members": {"task": "members.retry_stale_pending", "schedule": 300.0},
}
# The member refresh job: every issued member's pass read again from SmartPages, stalest first, never faster
# than MEMBER_REFRESH_RATE requests per second across all workers together (a limiter shared in Redis).
MEMBER_REFRESH_INTERVAL = env.int("MEMBER_REFRESH_INTERVAL", default=3600)
MEMBER_REFRESH_RATE = env.float("MEMBER_REFRESH_RATE", default=10.0)
# Per process when the shared limiter's Redis cannot be reached: low enough for ten workers together.
MEMBER_REFRESH_FALLBACK_RATE = env.float("MEMBER_REFRESH_FALLBACK_RATE", default=MEMBER_REFRESH_RATE / 10)
MEMBER_REFRESH_CHUNK = env.int("MEMBER_REFRESH_CHUNK", default=200)  # members per task
# A refresh run still marked running after this long is taken as abandoned (its chunks were lost).
MEMBER_REFRESH_LOCK_SECONDS = env.int("MEMBER_REFRESH_LOCK_SECONDS", default=6 * 3600)
CELERY_BEAT_SCHEDULE["refresh-members"] = {
    "task": "members.member_refresh_start",
    "schedule": float(MEMBER_REFRESH_INTERVAL),
    "kwargs": {"trigger": "beat"},
}

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
# Claim requests (GET and POST of /p/<token>) allowed per client address before a 429 page.
CLAIM_RATE = env.str("CLAIM_RATE", default="60/m")

# --- Logging ----------------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"urllib3": {"level": "WARNING"}},
}
