"""A Redis outage under a production-shaped portal: gunicorn on the test database, the broker and the cache on
a redis-server of the test's own that it stops and starts, the sandbox upstream, then a real worker with beat.

While Redis is down nothing a holder or staff member does fails (claims, login, "Sync now", confirming a
batch's mapping); what could not be sent stays recorded, and once Redis is back the beat sweepers send it.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import requests

from conftest import own_redis_env, start_celery, start_gunicorn, stop_process, suite_env, wait_for
from links.models import LinkBatch
from links.tests.claim_factories import CSRF_RE, claim_over_http, link_path, mirror
from members.models import Member
from sandbox import Faults
from templates_sync.models import SyncRun

pytestmark = pytest.mark.slow

CLAIMS = 100
CAMPAIGN = "Nafn,Netfang,Sími,Hópur\nAnna Jónsdóttir,anna@example.is,6123456,A\n".encode()


def _portal_env(redis, sandbox) -> dict[str, str]:
    return {
        **own_redis_env(redis, sandbox),
        # The outage is the subject, not the per-address limit: every request here comes from 127.0.0.1.
        "CLAIM_RATE": "100000/m",
    }


def _staff_post(session: requests.Session, url: str, page_path: str, post_path: str, data: dict, **kwargs):
    page = session.get(url + page_path, timeout=30)
    token = CSRF_RE.search(page.text).group(1)
    return session.post(
        url + post_path,
        data={"csrfmiddlewaretoken": token, **data},
        allow_redirects=False,
        headers={"Referer": url + page_path},
        timeout=30,
        **kwargs,
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_redis_outage_refuses_no_claim_or_staff_action_and_the_sweepers_send_what_waited(
    own_redis, sandbox, make_user
):
    template = mirror()
    make_user("maria", "manager")
    web, url, _log = start_gunicorn(suite_env(_portal_env(own_redis, sandbox)), log_name="outage-gunicorn", workers=2)
    worker = None
    try:
        assert requests.get(url + "/healthz", timeout=10).json()["status"] == "ok"

        own_redis.stop()
        outage_started = time.monotonic()
        health = requests.get(url + "/healthz", timeout=10)
        assert (health.status_code, health.json()) == (
            200,
            {"status": "degraded", "database": "ok", "broker": "unreachable", "cache": "unreachable"},
        )

        statuses, slowest, row = [], 0.0, 0
        # OUTAGE_SECONDS=60 keeps claiming for a minute (the issue's measure); by default the 100 claims.
        while row < CLAIMS or time.monotonic() - outage_started < float(os.environ.get("OUTAGE_SECONDS", 0)):
            row, started = row + 1, time.monotonic()
            fields = {"name": f"Holder {row}", "email": f"holder{row}@example.is"}
            statuses += claim_over_http(url, link_path(fields=fields, external_id=f"outage-{row}"))
            slowest = max(slowest, time.monotonic() - started)

        # A claim SmartPages cannot take now: its retry task cannot be sent either (the broker is down).
        sandbox.faults = Faults(error_rate=1.0, scope="passes")
        statuses += claim_over_http(url, link_path(fields={"name": "Late Holder", "email": "late@example.is"}))
        sandbox.faults = Faults()

        staff = requests.Session()
        login = _staff_post(
            staff, url, "/login/", "/login/", {"username": "maria", "password": "correct horse battery"}
        )
        assert (login.status_code, login.headers["Location"]) == (302, "/")
        sync_now = _staff_post(staff, url, "/sync/", "/sync/now/", {})
        assert sync_now.status_code == 302 and "?run=" in sync_now.headers["Location"]
        upload = _staff_post(
            staff,
            url,
            f"/links/template/{template.pk}/upload/",
            f"/links/template/{template.pk}/upload/",
            {"delimiter": ""},
            files={"file": ("vor.csv", CAMPAIGN, "text/csv")},
        )
        assert upload.status_code == 302, upload.status_code
        batch = LinkBatch.objects.get()
        confirm = _staff_post(
            staff,
            url,
            f"/links/{batch.pk}/",
            f"/links/{batch.pk}/confirm/",
            {"col_0": "name", "col_1": "email", "col_2": "phone", "col_3": ""},
        )
        assert confirm.status_code == 302
        outage_seconds = time.monotonic() - outage_started

        refused = [status for status in statuses if status not in (200, 302)]
        print(
            f"\nRedis down {outage_seconds:.1f} s: {row + 1} claims, {len(statuses)} requests, "
            f"{len(refused)} refused; slowest claim {slowest:.2f} s"
        )
        assert refused == []
        assert Member.objects.filter(status=Member.Status.ISSUED).count() == row
        late = Member.objects.get(status=Member.Status.PENDING)
        run = SyncRun.objects.get(kind=SyncRun.Kind.FULL)
        assert run.status == SyncRun.Status.QUEUED  # recorded; its task could not be sent
        assert LinkBatch.objects.get().status == LinkBatch.Status.QUEUED

        own_redis.start()
        assert wait_for(
            lambda: requests.get(url + "/healthz", timeout=10).json()["status"] == "ok",
            timeout=30,
            message="/healthz to see Redis back",
        )
        # A real worker with beat, the sweeps every 2 s, work counted as waiting after 3 s (OUTAGE_SWEEP=60 runs
        # them at the production defaults, to measure how long the wait is there).
        sweep = os.environ.get("OUTAGE_SWEEP", "")
        sweep_env = {"SWEEP_INTERVAL": sweep or "2", "SWEEP_OVERDUE_AFTER": sweep or "3"}
        worker = start_celery({**_portal_env(own_redis, sandbox), **sweep_env}, beat=True, log_name="outage-worker")
        swept_from = time.monotonic()
        # The sweeper sends the queued run; beat's own first sync may start just before it, and then the queued
        # run is recorded as skipped (one full sync at a time). Either way it ran, and the mirror was synced.
        wait_for(
            lambda: SyncRun.objects.filter(
                pk=run.pk, status__in=[SyncRun.Status.SUCCEEDED, SyncRun.Status.SKIPPED]
            ).exists(),
            timeout=60 + 3 * int(sweep or 0),
            message="the sweeper to send the queued sync run",
        )
        assert SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status=SyncRun.Status.SUCCEEDED).exists()
        issued = wait_for(
            lambda: Member.objects.filter(pk=late.pk, status=Member.Status.ISSUED).first(),
            timeout=60 + 3 * int(sweep or 0),
            message="the sweeper to retry the member whose retry could not be sent",
        )
        print(
            f"sweeps every {sweep_env['SWEEP_INTERVAL']} s: the queued sync run and the pending member were done "
            f"{time.monotonic() - swept_from:.1f} s after the worker started, the member "
            f"{(issued.updated_at - late.created_at).total_seconds():.1f} s after its claim"
        )
        late_passes = [p for p in sandbox.passes() if p["inputFields"][0]["value"] == "Late Holder"]
        assert [p["id"] for p in late_passes] == [str(issued.pass_id)]
        assert SyncRun.objects.filter(kind=SyncRun.Kind.FULL, trigger=SyncRun.Trigger.MANUAL).count() == 1
    finally:
        if worker is not None:
            stop_process(worker)
        web.terminate()
        web.wait(timeout=30)


@pytest.mark.django_db
def test_the_cache_counts_in_memory_while_redis_is_away_so_limits_still_hold(own_redis, settings):
    """The fallback is a counter, not a free pass: with Redis stopped the claim limit still answers 429."""
    from django.core.cache import caches
    from django.test import Client

    from portal.resilient_cache import FallbackRedisCache

    settings.CACHES = {
        "default": {
            "BACKEND": "portal.resilient_cache.FallbackRedisCache",
            "LOCATION": own_redis.url(1),
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    settings.CLAIM_RATE = "3/m"
    cache = caches["default"]
    assert isinstance(cache, FallbackRedisCache) and cache.reachable()
    own_redis.stop()
    assert not cache.reachable()

    client = Client()
    path = "/p/" + uuid.uuid4().hex  # not a link: the limit is counted before the token is read
    started = time.monotonic()
    codes = [client.get(path).status_code for _ in range(5)]
    assert codes == [404, 404, 404, 429, 429]
    assert time.monotonic() - started < 3  # one short timeout, then Redis is left alone for a few seconds
