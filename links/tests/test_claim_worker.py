"""A claim made while SmartPages is down, finished by the retry task on a real Celery worker process."""

import pytest

from conftest import wait_for
from members.models import Member
from sandbox import Faults

from .claim_factories import PERCY, link_path, mirror, open_and_claim


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_claim_made_while_smartpages_is_down_is_issued_later_by_the_retry_task(
    celery_worker_process, recovery_beat, live_sandbox, client, settings
):
    settings.CLAIM_RATE = "100000/m"
    mirror()
    live_sandbox.faults = Faults(error_rate=1.0, scope="passes")

    response = open_and_claim(client, link_path(fields=PERCY))

    member = Member.objects.get()
    assert member.status == Member.Status.PENDING
    assert "Your pass is being prepared." in client.get(response["Location"]).content.decode()
    # The first retry (due 2 s after the claim, sent by the sweep) meets SmartPages still down; the next waits longer.
    wait_for(lambda: Member.objects.get(pk=member.pk).issue_attempts >= 2, timeout=20, message="the first retry")
    assert Member.objects.get(pk=member.pk).status == Member.Status.PENDING
    live_sandbox.faults = Faults()

    issued = wait_for(
        lambda: Member.objects.filter(pk=member.pk, status=Member.Status.ISSUED).first(),
        timeout=30,
        message="the retry task to issue the pass",
    )
    assert issued.issue_attempts >= 3 and issued.pass_id is not None
    assert [p["id"] for p in live_sandbox.passes() if p["inputFields"][0]["value"] == "Percy PassKit"][-1] == str(
        issued.pass_id
    )
    page = client.get(response["Location"])
    assert str(issued.pass_id) in page.content.decode() and "Refresh" not in page
