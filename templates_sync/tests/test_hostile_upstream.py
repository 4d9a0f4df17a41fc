"""A SmartPages (or something in its place) that drips, bombs or redirects cannot stall or fill the portal
(issue 22): every call keeps its total deadline, a reply is refused past its byte cap after decompression, a
redirect is an error naming its target; claims through gunicorn and syncs in a real worker show it, with the
deadlines set low. The sandbox's faults: drip_seconds, gzip_bomb_bytes, redirect_to."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import (
    SANDBOX_KEY_ID,
    SANDBOX_KEY_TOKEN,
    start_celery,
    start_gunicorn,
    stop_process,
    suite_env,
    wait_for,
)
from links.tests.claim_factories import CSRF_RE, link_path, mirror, nonce_of
from members.models import Member
from sandbox import DEMO_TEMPLATE_ID, Faults, SmartPagesSandbox
from templates_sync import services, sync
from templates_sync.client import (
    DeadlineExceeded,
    Redirected,
    ReplyTooLarge,
    SmartPagesClient,
    default_retry,
)
from templates_sync.models import PassTemplate, SyncRun

DRIP = 8.0  # seconds between two bytes, as the upstream dripped
BOMB = 500_000_000  # bytes once inflated; about 486 kB on the wire


def _client(sandbox, **options) -> SmartPagesClient:
    return SmartPagesClient(
        base_url=sandbox.url, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN, timeout=(5.0, 10.0), **options
    )


def _timed(call) -> tuple[Exception | None, float]:
    started = time.monotonic()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test looks at which one
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# --- the client alone, against the sandbox over HTTP ---------------------------------------------------------
@pytest.mark.slow  # takes seconds
def test_a_dripping_upstream_is_cut_off_at_the_calls_deadline(sandbox):
    """A byte every 8 s never trips a 10 s read timeout (it is per socket read): only the deadline ends it."""
    sandbox.faults = Faults(drip_seconds=DRIP)
    with _client(sandbox, deadline=1.5) as client:
        error, seconds = _timed(lambda: client.get_template(DEMO_TEMPLATE_ID))
    assert isinstance(error, DeadlineExceeded), error
    assert "within its deadline of 1.5 s" in str(error)
    assert 1.4 <= seconds < 2.5


def test_retry_after_waits_count_against_the_deadline(sandbox):
    sandbox.faults = Faults(rate_limit_rate=1.0, retry_after=5)
    with _client(sandbox, deadline=2, retry=default_retry().new(backoff_factor=0)) as client:
        error, seconds = _timed(lambda: client.get_template(DEMO_TEMPLATE_ID))
    assert isinstance(error, DeadlineExceeded), error
    assert seconds < 1  # a 5 s wait that would pass the deadline is not started
    assert sandbox.request_count("GET") == 1


def test_a_reply_inflating_past_the_cap_is_refused_with_the_reason(sandbox):
    sandbox.faults = Faults(gzip_bomb_bytes=50_000_000)
    with _client(sandbox, max_reply_bytes=1_000_000) as client:
        error, _seconds = _timed(lambda: client.list_templates(page=0, page_size=100))
    assert isinstance(error, ReplyTooLarge), error
    assert "larger than SMARTPAGES_MAX_REPLY_BYTES (1,000,000 bytes once decompressed)" in str(error)
    sandbox.faults = Faults()
    with _client(sandbox, max_reply_bytes=1_000_000) as client:  # an ordinary page fits
        assert len(client.list_templates(page=0, page_size=100).data) == 25


@pytest.mark.django_db
def test_a_cross_host_redirect_is_refused_naming_its_target_and_nothing_is_stored(sandbox):
    with SmartPagesSandbox(templates=3, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN) as elsewhere:
        sandbox.faults = Faults(redirect_to=elsewhere.url)
        run = sync.templates_sync_all(trigger=SyncRun.Trigger.MANUAL)
        asked_elsewhere = elsewhere.request_count()
    assert run.status == SyncRun.Status.FAILED
    assert f"redirect (302) to {elsewhere.url}/api/v1/pass-template" in run.error
    assert "redirects are not followed" in run.error
    assert asked_elsewhere == 0
    assert not PassTemplate.objects.exists()
    with _client(sandbox) as client:
        with pytest.raises(Redirected):
            client.create_pass({"passTemplateId": DEMO_TEMPLATE_ID, "inputFields": []})
    assert sandbox.passes() == []


# --- real processes: a claim through gunicorn, a sync in a Celery worker -----------------------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_claim_on_a_dripping_upstream_is_answered_within_its_deadline(live_sandbox):
    """The holder's POST is answered within SMARTPAGES_REQUEST_DEADLINE + 1 s with "being prepared"; the member
    waits as pending for the retry task. gunicorn's timeout is far above, so only the deadline can end it."""
    mirror()
    deadline = 2.0
    web, url, _log = start_gunicorn(
        suite_env(
            {
                "SMARTPAGES_API_URL": live_sandbox.url,
                "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
                "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
                "SMARTPAGES_REQUEST_DEADLINE": str(deadline),
                "GUNICORN_TIMEOUT": "60",
                "CLAIM_RATE": "100000/m",
            }
        ),
        log_name="drip-claim-gunicorn",
    )
    try:
        live_sandbox.faults = Faults(drip_seconds=DRIP, scope="passes")
        path = link_path(fields={"name": "Dropi Dropason", "email": "dropi@example.is"}, external_id="drip-1")
        session = requests.Session()
        page = session.get(url + path, timeout=30)
        form = {"nonce": nonce_of(page.text), "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)}
        started = time.monotonic()
        posted = session.post(url + path, data=form, allow_redirects=False, timeout=60, headers={"Referer": url + path})
        seconds = time.monotonic() - started
        shown = session.get(url + posted.headers["Location"], timeout=30)
    finally:
        live_sandbox.faults = Faults()
        stop_process(web)
    print(f"\nclaim on a dripping upstream answered in {seconds:.2f} s (deadline {deadline} s)")
    assert posted.status_code == 302 and seconds <= deadline + 1
    assert "Your pass is being prepared." in shown.text
    assert Member.objects.get().status == Member.Status.PENDING


def _worker_env(sandbox, queue: str, **extra) -> dict[str, str]:
    return {
        "SMARTPAGES_API_URL": sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "CELERY_QUEUE": queue,
        **extra,
    }


def _finished(run: SyncRun) -> SyncRun | None:
    run.refresh_from_db()
    return run if run.status in (SyncRun.Status.SUCCEEDED, SyncRun.Status.FAILED) else None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_sync_on_a_dripping_upstream_fails_within_its_deadline_and_releases_the_lock(sandbox, manager, own_queue):
    deadline = 3.0
    worker = start_celery(
        _worker_env(sandbox, own_queue, SMARTPAGES_DEADLINE=str(deadline)), log_name="drip-sync-worker"
    )
    try:
        sandbox.faults = Faults(drip_seconds=DRIP, scope="templates")
        stalled = services.sync_request_full(user=manager)
        wait_for(lambda: _finished(stalled), timeout=30, message="the stalled sync to fail")
        took = (stalled.finished_at - stalled.started_at).total_seconds()
        print(f"\nsync on a dripping upstream failed after {took:.2f} s (deadline {deadline} s)")
        assert stalled.status == SyncRun.Status.FAILED and took <= deadline + 1
        assert f"did not answer GET /api/v1/pass-template within its deadline of {deadline:g} s" in stalled.error

        sandbox.faults = Faults()  # the next "Sync now" runs: the lock was released
        again = services.sync_request_full(user=manager)
        assert again.status == SyncRun.Status.QUEUED
        wait_for(lambda: _finished(again), timeout=60, message="the next sync to finish")
        assert again.status == SyncRun.Status.SUCCEEDED and again.created_count == 25
    finally:
        stop_process(worker)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_gzip_bomb_fails_the_sync_with_the_reason_and_the_worker_stays_small(sandbox, manager, own_queue):
    """498 kB inflating to 500 MB took 1.1 GB of a worker's memory; now the page is refused at the 20 MB cap
    (the default) and the worker's peak resident memory stays under 200 MB."""
    sandbox.faults = Faults(gzip_bomb_bytes=BOMB, scope="templates")
    sandbox.get_template(DEMO_TEMPLATE_ID)
    worker = start_celery(_worker_env(sandbox, own_queue), log_name="bomb-sync-worker")
    try:
        run = services.sync_request_full(user=manager)
        wait_for(lambda: _finished(run), timeout=120, message="the bombed sync to end")
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        peaks = {int(pid): _peak_rss_mb(int(pid)) for pid in children} | {worker.pid: _peak_rss_mb(worker.pid)}
    finally:
        sandbox.faults = Faults()
        stop_process(worker)
    print(f"\ngzip bomb ({BOMB:,} bytes inflated): worker peak resident memory (MB) by pid {peaks}")
    assert run.status == SyncRun.Status.FAILED
    assert "larger than SMARTPAGES_MAX_REPLY_BYTES (20,000,000 bytes once decompressed)" in run.error
    assert max(peaks.values()) < 200


# --- gunicorn's own error log: no claim token in it -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_claim_that_outlives_its_gunicorn_worker_leaves_no_token_in_the_error_log(live_sandbox):
    """A worker killed mid-claim (gunicorn's timeout below the claim's deadline, on a slow upstream) makes
    gunicorn log "WORKER TIMEOUT" and "Error handling request POST /p/<token>" with a traceback. The sync worker
    class is the one that meets this line from a slow claim (a gthread worker's main thread keeps beating while
    a request thread waits); the redaction sits on the error log's handlers, made in the logger class's setup,
    which every worker class shares."""
    mirror()
    web, url, log = start_gunicorn(
        suite_env(
            {
                "SMARTPAGES_API_URL": live_sandbox.url,
                "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
                "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
                "SMARTPAGES_REQUEST_DEADLINE": "30",
                "SMARTPAGES_REQUEST_READ_TIMEOUT": "30",
                "GUNICORN_TIMEOUT": "2",
                "CLAIM_RATE": "100000/m",
            }
        ),
        # --threads 1 too: with threads > 1 (the config's default) gunicorn runs gthread whatever the class says.
        command=["gunicorn", "-c", "deploy/gunicorn.conf.py", "--worker-class", "sync", "--threads", "1"],
        log_name="error-log-redaction",
    )
    path = link_path(fields={"name": "Tími Útrunninn", "email": "timi@example.is"}, external_id=f"t-{uuid.uuid4()}")
    token = path.removeprefix("/p/")
    try:
        session = requests.Session()
        page = session.get(url + path, timeout=30)
        form = {"nonce": nonce_of(page.text), "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)}
        live_sandbox.faults = Faults(slow_seconds=8, scope="passes")
        try:
            session.post(url + path, data=form, allow_redirects=False, timeout=30, headers={"Referer": url + path})
        except requests.ConnectionError:
            pass  # the killed worker may close the connection without an answer
        wait_for(lambda: "Error handling request" in log.read_text(), timeout=30, message="gunicorn's error line")
    finally:
        live_sandbox.faults = Faults()
        stop_process(web)
    text = log.read_text()
    assert "WORKER TIMEOUT" in text
    assert f"Error handling request POST /p/{token[:6]}..." in text
    assert token not in text and token[6:30] not in text
