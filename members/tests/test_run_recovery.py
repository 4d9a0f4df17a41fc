"""A bulk action or a member refresh run whose task is lost is finished by the recovery sweep, in real processes:
the portal served by gunicorn and real Celery workers with beat, all on a redis-server of the test's own (which
the test stops, and whose worker it kills with SIGKILL), against the sandbox over HTTP and the test database."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import requests
from django.urls import reverse

from conftest import (
    finish_with_beat,
    kill_worker_part_way,
    own_redis_env,
    start_gunicorn,
    stop_process,
    suite_env,
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
from sandbox import Faults

from .factories import make_member, mirror_template

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

PASSES = "/api/v1/pass/"


def _env(redis, sandbox) -> dict[str, str]:
    return {
        **own_redis_env(redis, sandbox),
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


def _post_form(session: requests.Session, url: str, page_path: str, post_path: str, data: dict) -> bool:
    """Post a staff form as the browser would (the page's CSRF token); True when it redirects, as they do."""
    page = session.get(url + page_path, timeout=30)
    posted = session.post(
        url + post_path,
        data={"csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1), **data},
        headers={"Referer": url + page_path},
        allow_redirects=False,
        timeout=30,
    )
    assert posted.status_code == 302, posted.status_code
    return True


def _post_bulk_void(session: requests.Session, url: str, members: list[Member]) -> bool:
    data = {"action": "void", "member": [member.pk for member in members]}
    return _post_form(session, url, reverse("members:member_list"), reverse("members:member_bulk"), data)


def _post_refresh_now(session: requests.Session, url: str) -> bool:
    return _post_form(session, url, reverse("members:refresh_runs"), reverse("members:refresh_now"), {})


def _voided_upstream(sandbox) -> set[str]:
    return {found["id"] for found in sandbox.passes() if found.get("isVoided")}


def test_a_bulk_action_whose_task_could_not_be_sent_is_sent_by_the_sweep_and_completes(own_redis, sandbox, manager):
    members = _issued_members(sandbox, 6)
    env = _env(own_redis, sandbox)
    web, url, _log = start_gunicorn(suite_env(env), log_name="bulk-unsent-gunicorn")
    try:
        session = _manager_session(url)
        own_redis.stop()  # the broker is unreachable when the request commits
        assert _post_bulk_void(session, url, members)  # the staff member's request did not fail
    finally:
        stop_process(web)
    action = MemberBulkAction.objects.get()
    assert (action.status, action.total, action.done) == ("queued", 6, 0)  # recorded; its task never left

    own_redis.start()  # back, and empty: no message waits for the action
    finish_with_beat(
        env,
        log_name="bulk-unsent-worker",
        finished=lambda: MemberBulkAction.objects.get().is_finished,
        message="the sweep to send the action",
    )
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
    session = _manager_session(url)
    try:
        action = kill_worker_part_way(
            env,
            log_name="bulk-killed-worker",
            start=lambda: _post_bulk_void(session, url, members) and MemberBulkAction.objects.get(),
            part_way=lambda action: MemberBulkAction.objects.get(pk=action.pk).done >= 5,
            message="the action to be a few members in",
        )
        killed = MemberBulkAction.objects.get(pk=action.pk)
        assert (killed.status, killed.attempt) == ("running", 1)
        assert 5 <= killed.done < 24
        outcomes = MemberBulkOutcome.objects.filter(action=action)
        done_before = dict(outcomes.exclude(outcome="waiting").values_list("member_id", "outcome"))

        finish_with_beat(
            env,
            log_name="bulk-taking-over-worker",
            finished=lambda: MemberBulkAction.objects.get(pk=action.pk).is_finished,
            message="the sweep to queue the action again and a second worker to finish it",
        )
        detail = session.get(url + reverse("members:bulk_detail", args=[action.pk]), timeout=30).text
    finally:
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
    # Changed upstream: the last member, read in the last chunk, long after the kill.
    sandbox.change_pass(str(members[-1].pass_id), status="REDEEMED")
    env = {**_env(own_redis, sandbox), "MEMBER_REFRESH_CHUNK": "4"}  # 10 chunks
    sandbox.faults = Faults(slow_seconds=0.25, scope="passes")  # so the kill lands part-way through
    sandbox.reset_counts()
    web, url, _log = start_gunicorn(suite_env(env), log_name="refresh-killed-gunicorn")
    session = _manager_session(url)
    try:
        run = kill_worker_part_way(
            env,
            log_name="refresh-killed-worker",
            start=lambda: _post_refresh_now(session, url) and MemberRefreshRun.objects.get(),
            # A few chunks done and one being read: with two worker processes finishing their first chunks
            # together, the moment the second is counted can fall while neither has taken its next one.
            part_way=lambda run: (
                MemberRefreshRun.objects.get(pk=run.pk).chunks_done >= 2
                and MemberRefreshChunk.objects.filter(run=run, status="running").exists()
            ),
            message="the run to be a few chunks in, in the middle of one",
        )
        killed = MemberRefreshRun.objects.get(pk=run.pk)
        assert killed.status == "running" and 2 <= killed.chunks_done < 10
        lost = set(MemberRefreshChunk.objects.filter(run=run, status="running").values_list("pk", flat=True))
        assert lost  # the worker died in the middle of chunks
        done_before = dict(MemberRefreshChunk.objects.filter(run=run, status="done").values_list("pk", "attempt"))

        finish_with_beat(
            env,
            log_name="refresh-taking-over-worker",
            finished=lambda: MemberRefreshRun.objects.get(pk=run.pk).is_finished,
            message="the sweep to send the lost chunks again and a second worker to finish the run",
        )
        history = session.get(url + reverse("members:refresh_runs"), timeout=30).text
    finally:
        stop_process(web)

    run.refresh_from_db()
    # Each member counted once, whichever worker read it; the chunks made before the kill were not made again.
    assert (run.status, run.total, run.checked, run.errors, run.chunks_total, run.chunks_done) == (
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
    read = set(sandbox.request_paths("GET", PASSES))
    assert read == {f"{PASSES}{member.pass_id}" for member in members}  # every pass was read
    assert "succeeded" in history


def _bulk_void_with_beat(own_redis, sandbox, env: dict[str, str], members: list[Member], name: str) -> MemberBulkAction:
    """Post a bulk void through the portal and let a worker with beat (the recovery sweep on) finish it. (The
    worker starts on an emptied queue: the sweep sends the action.)"""
    web, url, _log = start_gunicorn(suite_env(env), log_name=f"{name}-gunicorn")
    try:
        assert _post_bulk_void(_manager_session(url), url, members)
        finish_with_beat(
            env,
            log_name=f"{name}-worker",
            finished=lambda: MemberBulkAction.objects.get().is_finished,
            message="the action to finish",
        )
    finally:
        stop_process(web)
    return MemberBulkAction.objects.get()


def test_a_bulk_action_longer_than_the_task_time_limit_goes_on_in_slices_under_one_attempt(own_redis, sandbox, manager):
    """The action needs longer than a task may run (soft limit 3 s here, 30 min by default): each task works
    for RUN_SLICE_SECONDS and hands the rest to a task of its own, so no task is cut off and no attempt lost."""
    members = _issued_members(sandbox, 16)
    env = {
        **_env(own_redis, sandbox),
        "CELERY_TASK_SOFT_TIME_LIMIT": "3",
        "CELERY_TASK_TIME_LIMIT": "8",
        "RUN_SLICE_SECONDS": "1",
    }
    sandbox.faults = Faults(slow_seconds=0.3, scope="passes")  # 16 members: about 5 s of calls
    sandbox.reset_counts()
    action = _bulk_void_with_beat(own_redis, sandbox, env, members, "bulk-sliced")
    assert (action.status, action.attempt, action.error) == ("succeeded", 1, "")
    assert (action.total, action.done, action.succeeded, action.failed) == (16, 16, 16, 0)
    assert Counter(sandbox.request_paths("PUT", PASSES)) == {f"{PASSES}{member.pass_id}": 1 for member in members}


def test_a_worker_waiting_on_a_call_longer_than_the_stale_bound_keeps_its_action(own_redis, sandbox, manager):
    """Each SmartPages call takes 4 s, longer than RUN_STALE_SECONDS (3 s here): the worker beats from a thread
    while it waits, so the sweep leaves it alone and no second worker acts on the same action."""
    members = _issued_members(sandbox, 3)
    env = _env(own_redis, sandbox)
    sandbox.faults = Faults(slow_seconds=4, scope="passes")
    sandbox.reset_counts()
    action = _bulk_void_with_beat(own_redis, sandbox, env, members, "bulk-slow-call")
    assert (action.status, action.attempt, action.done, action.succeeded) == ("succeeded", 1, 3, 3)
    assert Counter(sandbox.request_paths("PUT", PASSES)) == {f"{PASSES}{member.pass_id}": 1 for member in members}
    assert sandbox.request_count("GET", PASSES) == 0  # no take-over: no worker had to read a pass back


@pytest.mark.slow
def test_a_refresh_of_2000_members_whose_worker_is_killed_is_taken_over_within_30_seconds(own_redis, sandbox, settings):
    """Two workers at the production defaults (a beat every RUN_HEARTBEAT_SECONDS, stale after RUN_STALE_SECONDS, a
    sweep every SWEEP_INTERVAL), MEMBER_REFRESH_RATE=100 across both: the one SIGKILLed part-way costs seconds,
    and every member is read, its chunk counted once."""
    import subprocess
    import sys
    import time

    from conftest import ARTIFACTS, ROOT, kill_with_sigkill, start_celery, wait_for

    members = _issued_members(sandbox, 2000)
    env = {
        **own_redis_env(own_redis, sandbox),
        "MEMBER_REFRESH_RATE": "100",
        "TEMPLATE_SYNC_INTERVAL": "3600",
        "MEMBER_REFRESH_INTERVAL": "3600",
    }
    doomed = start_celery(env, log_name="refresh-doomed-worker")
    (ARTIFACTS / "refresh-survivor-worker-beat-schedule").unlink(missing_ok=True)
    survivor = start_celery(env, beat=True, log_name="refresh-survivor-worker")
    try:
        # The run's chunks go out on the test's own broker, from a process that uses it (the task's path).
        code = (
            "import django; django.setup(); from members.services import refresh; "
            "refresh.member_refresh_run_start(trigger='manual')"
        )
        subprocess.run(
            [sys.executable, "-c", code], env=suite_env(env), check=True, cwd=ROOT, capture_output=True, timeout=120
        )
        # More chunks running than the survivor (concurrency 2) can hold: the doomed worker holds one at least.
        wait_for(
            lambda: MemberRefreshChunk.objects.filter(status="running").count() >= 3,
            timeout=60,
            interval=0.05,
            message="both workers reading chunks",
        )
        time.sleep(2)
        kill_with_sigkill(doomed)
        killed_at = time.monotonic()
        taken_over = wait_for(
            lambda: MemberRefreshChunk.objects.filter(attempt__gte=2).exists() and time.monotonic(),
            timeout=60,
            interval=0.1,
            message="a lost chunk to be taken over",
        )
        run = wait_for(
            lambda: MemberRefreshRun.objects.filter(status__in=["succeeded", "failed"]).first(),
            timeout=120,
            message="the run to finish",
        )
        finished_after = time.monotonic() - killed_at
    finally:
        stop_process(survivor)
        if doomed.poll() is None:
            stop_process(doomed)
    print(
        f"\nSIGKILL mid-refresh (2,000 members at 100/s): taken over after {taken_over - killed_at:.1f} s, run "
        f"finished {finished_after:.1f} s after the kill (RUN_STALE_SECONDS {settings.RUN_STALE_SECONDS:g}, "
        f"SWEEP_INTERVAL {settings.SWEEP_INTERVAL:g})"
    )
    assert taken_over - killed_at <= 30
    assert (run.status, run.checked, run.errors, run.chunks_done, run.chunks_total) == (
        "succeeded",
        len(members),
        0,
        run.chunks_total,
        run.chunks_total,
    )
    assert not Member.objects.filter(pk__in=[m.pk for m in members], refreshed_at__isnull=True).exists()
