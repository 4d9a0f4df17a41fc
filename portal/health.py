"""GET /healthz: are the database, the broker and the cache reachable. Public, so it says nothing more.

Only the database decides the status code (503 without it: no page can work). A broker or cache outage is
reported as "degraded" with 200: claims and logins still work then (rate limits count in memory, work is
recorded in rows and re-sent by the sweepers), and a load balancer that took the portal out of rotation for it
would refuse every holder instead.
"""

import logging

from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .celery import app as celery_app

logger = logging.getLogger(__name__)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("health check: database unreachable")
        return False


def _broker_ok() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        logger.warning("health check: broker unreachable", exc_info=True)
        return False


def _cache_ok() -> bool:
    reachable = getattr(cache, "reachable", None)
    if reachable is not None:  # the Redis cache: ask Redis itself, not its in-memory fallback
        ok = reachable()
    else:
        try:
            cache.set("healthz", "ok", 10)
            ok = cache.get("healthz") == "ok"
        except Exception:  # noqa: BLE001 - any cache error means the cache is not usable
            ok = False
    if not ok:
        logger.warning("health check: cache unreachable")
    return ok


@login_not_required
@never_cache
@require_GET
def healthz(request):
    checks = {"database": _database_ok(), "broker": _broker_ok(), "cache": _cache_ok()}
    if not checks["database"]:
        status = "error"
    else:
        status = "ok" if all(checks.values()) else "degraded"
    body = {"status": status} | {name: "ok" if ok else "unreachable" for name, ok in checks.items()}
    return JsonResponse(body, status=503 if status == "error" else 200)
