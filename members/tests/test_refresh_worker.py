"""The refresh job and bulk actions in real Celery workers: two worker processes (each with a pool of two) share
one rate, counted from the request times the sandbox saw."""

import uuid

import pytest
from django.urls import reverse

from background.rate_limit import most_in_one_second
from conftest import ARTIFACTS, SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN, start_celery, stop_process, wait_for
from members.models import Member, MemberBulkAction, MemberRefreshRun
from members.services import refresh

from .factories import make_member, mirror_template

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RATE = 20  # requests per second, for both workers together
WORKERS = ("refresh-a", "refresh-b")


@pytest.fixture(scope="module")
def two_workers(django_db_setup, django_db_blocker, session_sandbox):
    env = {
        "SMARTPAGES_API_URL": session_sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "MEMBER_REFRESH_RATE": str(RATE),
        "MEMBER_REFRESH_CHUNK": "4",
    }
    processes = [start_celery(env, log_name=name) for name in WORKERS]
    yield processes
    for process in processes:
        stop_process(process)


def members_with_passes(sandbox, template, count: int) -> list[Member]:
    return [
        make_member(template, name=f"Holder {n}", values={"name": f"Holder {n}"}, pass_id=uuid.UUID(pass_id))
        for n, pass_id in enumerate(sandbox.add_passes(str(template.pk), count))
    ]


def test_the_refresh_run_keeps_one_rate_across_two_worker_processes(two_workers, live_sandbox, settings):
    settings.MEMBER_REFRESH_CHUNK = 4
    club = mirror_template()
    members = members_with_passes(live_sandbox, club, 80)
    live_sandbox.change_pass(str(members[5].pass_id), status="REDEEMED")
    live_sandbox.reset_counts()

    run = refresh.member_refresh_run_start(trigger=MemberRefreshRun.Trigger.MANUAL)
    assert (run.status, run.total, run.chunks_total) == ("running", 80, 20)
    wait_for(lambda: MemberRefreshRun.objects.get(pk=run.pk).is_finished, timeout=90, message="the refresh run")

    run.refresh_from_db()
    assert (run.status, run.checked, run.changed, run.errors, run.chunks_done) == ("succeeded", 80, 1, 0, 20)
    assert Member.objects.get(pk=members[5].pk).status == Member.Status.REDEEMED
    times = sorted(live_sandbox.request_times("GET", "/api/v1/pass/"))
    assert len(times) == 80
    # Never faster than the rate. The limiter spaces the moments calls may start exactly; what the sandbox sees
    # is those moments plus each request's own delay on a busy machine, so a window may hold a few more.
    assert most_in_one_second(times) <= RATE * 1.1 + 1, most_in_one_second(times)
    assert len(times) / (times[-1] - times[0]) <= RATE * 1.1
    # Both workers took chunks: the rate was held by the shared limiter, not by one worker doing everything.
    for name in WORKERS:
        assert "members.member_refresh_chunk" in (ARTIFACTS / f"{name}.log").read_text(), name


def test_a_bulk_refresh_of_every_matching_member_runs_in_a_worker(two_workers, live_sandbox, manager, client):
    club = mirror_template()
    members = members_with_passes(live_sandbox, club, 30)
    make_member(club, name="Pending one", status=Member.Status.PENDING)
    live_sandbox.change_pass(str(members[0].pass_id), status="VOIDED")
    client.force_login(manager)

    response = client.post(
        reverse("members:member_bulk"), {"action": "refresh", "all": "1", "template": str(club.pk)}, follow=True
    )
    action = MemberBulkAction.objects.get()
    assert "Refresh from SmartPages: 31 members queued" in response.content.decode()
    status_url = reverse("members:bulk_status", args=[action.pk])
    wait_for(lambda: client.get(status_url).json()["finished"], timeout=90, message="the bulk refresh")
    state = client.get(status_url).json()
    assert (state["total"], state["done"], state["succeeded"], state["skipped"], state["failed"]) == (31, 31, 30, 1, 0)
    assert Member.objects.get(pk=members[0].pk).status == Member.Status.VOIDED
    page = client.get(reverse("members:bulk_detail", args=[action.pk])).content.decode()
    assert "No pass on SmartPages yet." in page
