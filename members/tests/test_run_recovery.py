"""A bulk action or member refresh run whose task is lost is finished by the recovery sweep, in real processes: the portal served by
gunicorn and real Celery workers with beat, all on a redis-server of the test's own (which the test stops, and
whose worker it kills with SIGKILL), against the sandbox over HTTP and the test database."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import requests
from django.urls import reverse

from conftest import (
    SANDBOX_KEY_ID,
    SANDBOX_KEY_TOKEN,
    kill_with_sigkill,
    start_celery,
    start_gunicorn,
    stop_process,
    suite_env,
    wait_for,
)
from links.tests.claim_factories import CSRF_RE
from members.models import (
    Member,
    MemberBulkAction,
    MemberBulkOutcome,
    MemberRefreshChunk,
    MemberRefreshRun,
    MemberStatusChange,
)
from templates_sync.sandbox import Faults

from .factories import make_member, mirror_template

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PASSES = "/api/v1/pass/"


def _env(redis, sandbox) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": redis.url(0),
        "CACHE_REDIS_URL": redis.url(1),
        "SMARTPAGES_API_URL": sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "MEMBER_REFRESH_RATE": "1000",  # the sweep is the subject here, not the rate
        "RUN_HEARTBEAT_SECONDS": "0.2",
        "RUN_STALE_SECONDS": "3",
        "SWEEP_INTERVAL": "1",
        "SWEEP_OVERDUE_AFTER": "2",
        "TEMPLATE_SYNC_INTERVAL": "3600",  # no scheduled template sync in the way
        "MEMBER_REFRESH_INTERVAL": "3600",
    }


def _issued_members(sandbox, count: int) -> list[Member]:
    template = mirror_template()
    return [
        make_member(template, name=f"Holder {n}", values={"name": f"Holder {n}"}, pass_id=uuid.UUID(pass_id))
        for n, pass_id in enumerate(sandbox.add_passes(str(template.pk), count))
    ]


def _manager_session(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(url + "/login/", timeout=30)
    login = session.post(
        url + "/login/",
        data={
            "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1),
            "username": "maria",
            "password": "correct horse battery",
        },
        headers={"Referer": url + "/login/"},
        allow_redirects=False,
        timeout=30,
    )
    assert (login.status_code, login.headers["Location"]) == (302, "/")
    return session


def _post_bulk_void(session: requests.Session, url: str, members: list[Member]) -> requests.Response:
    list_path = reverse("members:member_list")
    page = session.get(url + list_path, timeout=30)
    return session.post(
        url + reverse("members:member_bulk"),
        data={
            "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1),
            "action": "void",
            "member": [member.pk for member in members],
        },
        headers={"Referer": url + list_path},
        allow_redirects=False,
        timeout=30,
    )


def _voided_upstream(sandbox) -> set[str]:
    return {found["id"] for found in sandbox.passes() if found.get("isVoided")}


def test_a_bulk_action_whose_task_could_not_be_sent_is_sent_by_the_sweep_and_completes(own_redis, sandbox, manager):
    members = _issued_members(sandbox, 6)
    env = _env(own_redis, sandbox)
    web, url, _log = start_gunicorn(suite_env(env), log_name="bulk-unsent-gunicorn")
    worker = None
    try:
        session = _manager_session(url)
        own_redis.stop()  # the broker is unreachable when the request commits
        posted = _post_bulk_void(session, url, members)
        assert posted.status_code == 302, posted.status_code  # the staff member's request did not fail
        action = MemberBulkAction.objects.get()
        assert (action.status, action.total, action.done) == ("queued", 6, 0)  # recorded; its task never left

        own_redis.start()  # back, and empty: no message waits for the action
        worker = start_celery(env, beat=True, log_name="bulk-unsent-worker")
        wait_for(lambda: MemberBulkAction.objects.get().is_finished, timeout=90, message="the sweep to send it")
    finally:
        stop_process(web)
        if worker is not None:
            stop_process(worker)
    action.refresh_from_db()
    assert (action.status, action.done, action.succeeded, action.skipped, action.failed) == ("succeeded", 6, 6, 0, 0)
    assert action.attempt == 1  # sent again, taken once
    assert _voided_upstream(sandbox) == {str(member.pass_id) for member in members}
    assert Counter(sandbox.request_paths("PUT", PASSES)) == {f"{PASSES}{member.pass_id}": 1 for member in members}


def test_a_worker_killed_mid_bulk_action_is_taken_over_and_each_member_acted_on_once(own_redis, sandbox, manager):
    members = _issued_members(sandbox, 24)
    env = _env(own_redis, sandbox)
    sandbox.faults = Faults(slow_seconds=0.3, scope="passes")  # so the kill lands part-way through
    sandbox.reset_counts()
    web, url, _log = start_gunicorn(suite_env(env), log_name="bulk-killed-gunicorn")
    first = start_celery(env, log_name="bulk-killed-worker")
    session = _manager_session(url)
    try:
        posted = _post_bulk_void(session, url, members)
        assert posted.status_code == 302, posted.status_code
        action = MemberBulkAction.objects.get()
        wait_for(
            lambda: MemberBulkAction.objects.get(pk=action.pk).done >= 5,
            interval=0.05,
            message="the action to be a few members in",
        )
    finally:
        kill_with_sigkill(first)
    killed = MemberBulkAction.objects.get(pk=action.pk)
    assert (killed.status, killed.attempt) == ("running", 1)
    assert 5 <= killed.done < 24
    done_before = dict(
        MemberBulkOutcome.objects.filter(action=action).exclude(outcome="waiting").values_list("member_id", "outcome")
    )

    second = start_celery(env, beat=True, log_name="bulk-taking-over-worker")
    try:
        wait_for(
            lambda: MemberBulkAction.objects.get(pk=action.pk).is_finished,
            timeout=120,
            message="the sweep to queue the action again and a second worker to finish it",
        )
        detail = session.get(url + reverse("members:bulk_detail", args=[action.pk]), timeout=30).text
    finally:
        stop_process(second)
        stop_process(web)

    action.refresh_from_db()
    assert (action.status, action.attempt) == ("succeeded", 2)
    assert (action.total, action.done, action.succeeded, action.skipped, action.failed) == (24, 24, 24, 0, 0)
    outcomes = dict(MemberBulkOutcome.objects.filter(action=action).values_list("member_id", "outcome"))
    assert outcomes == {member.pk: "succeeded" for member in members}
    assert {member_id: outcomes[member_id] for member_id in done_before} == done_before  # kept as recorded
    # Each pass was voided upstream by exactly one PUT, the one in flight when the worker died included (the
    # second worker read that pass before acting), and each member's history says voided once.
    assert _voided_upstream(sandbox) == {str(member.pass_id) for member in members}
    assert Counter(sandbox.request_paths("PUT", PASSES)) == {f"{PASSES}{member.pass_id}": 1 for member in members}
    voided = Counter(MemberStatusChange.objects.filter(new="voided").values_list("member_id", flat=True))
    assert voided == {member.pk: 1 for member in members}
    assert "picked up where it left off" in detail and "24</span> done" in detail


def test_a_worker_killed_mid_refresh_run_costs_its_chunks_and_the_run_finishes_with_exact_counts(
    own_redis, sandbox, manager
):
    members = _issued_members(sandbox, 40)
    sandbox.change_pass(str(members[-1].pass_id), status="REDEEMED")
    env = {**_env(own_redis, sandbox), "MEMBER_REFRESH_CHUNK": "4"}  # 10 chunks
    sandbox.faults = Faults(slow_seconds=0.25, scope="passes")  # so the kill lands part-way through
    sandbox.reset_counts()
    web, url, _log = start_gunicorn(suite_env(env), log_name="refresh-killed-gunicorn")
    first = start_celery(env, log_name="refresh-killed-worker")
    session = _manager_session(url)
    try:
        page = session.get(url + reverse("members:refresh_runs"), timeout=30)
        started = session.post(
            url + reverse("members:refresh_now"),
            data={"csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)},
            headers={"Referer": url + reverse("members:refresh_runs")},
            allow_redirects=False,
            timeout=30,
        )
        assert started.status_code == 302, started.status_code
        run = MemberRefreshRun.objects.get()
        wait_for(
            lambda: MemberRefreshRun.objects.get(pk=run.pk).chunks_done >= 2,
            interval=0.05,
            message="the run to be a few chunks in",
        )
    finally:
        kill_with_sigkill(first)
    killed = MemberRefreshRun.objects.get(pk=run.pk)
    assert killed.status == "running" and 2 <= killed.chunks_done < 10
    lost = set(MemberRefreshChunk.objects.filter(run=run, status="running").values_list("pk", flat=True))
    assert lost  # the worker died in the middle of chunks
    done_before = dict(MemberRefreshChunk.objects.filter(run=run, status="done").values_list("pk", "attempt"))

    second = start_celery(env, beat=True, log_name="refresh-taking-over-worker")
    try:
        wait_for(
            lambda: MemberRefreshRun.objects.get(pk=run.pk).is_finished,
            timeout=120,
            message="the sweep to send the lost chunks again and a second worker to finish the run",
        )
        history = session.get(url + reverse("members:refresh_runs"), timeout=30).text
    finally:
        stop_process(second)
        stop_process(web)

    run.refresh_from_db()
    # Each member counted once, whichever worker read it; the chunks made before the kill were not made again.
    assert (run.status, run.total, run.checked, run.errors, run.chunks, run.chunks_done) == (
        "succeeded",
        40,
        40,
        0,
        10,
        10,
    )
    assert run.changed == 1 and Member.objects.get(pk=members[-1].pk).status == Member.Status.REDEEMED
    chunks = dict(MemberRefreshChunk.objects.filter(run=run).values_list("pk", "attempt"))
    assert {pk: chunks[pk] for pk in done_before} == done_before
    assert all(chunks[pk] == 2 for pk in lost)
    read = Counter(sandbox.request_paths("GET", PASSES))
    assert set(read) == {f"{PASSES}{member.pass_id}" for member in members}  # every pass was read
    assert "succeeded" in history
