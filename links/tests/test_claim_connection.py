"""A claim whose database connection is killed part of the way (a database restart, a killed backend) is tried
once more on a fresh connection: the holder gets their pass, not an error page, and only one."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import terminate_own_backend
from links import claims
from members.models import Member
from members.services import autofill, issuing

from .claim_factories import PERCY, link_path, mirror, open_and_claim

GUDRUN = {"name": "Guðrún Jónsdóttir", "email": "gudrun@example.is", "phone": "699 1234"}

pytestmark = pytest.mark.django_db(transaction=True)


def on_a_connection_killed_once(function, kills: list):
    """`function`, whose first call finds this thread's database connection killed under it (noted in `kills`)."""

    def call(**kwargs):
        if not kills:
            terminate_own_backend()
            kills.append(1)
        return function(**kwargs)

    return call


def test_a_claim_whose_connection_is_killed_mid_way_still_issues_one_pass(client, sandbox, settings, monkeypatch):
    settings.CLAIM_RATE = "100000/m"
    mirror()
    kills = []
    monkeypatch.setattr(claims, "claim_submit", on_a_connection_killed_once(claims.claim_submit, kills))
    response = open_and_claim(client, link_path(fields=PERCY))

    assert kills == [1]
    assert response.status_code == 302 and "/pass/" in response["Location"]
    member = Member.objects.get()
    assert member.status == Member.Status.ISSUED
    assert [p["id"] for p in sandbox.passes()] == [str(member.pass_id)]
    page = client.get(response["Location"]).content.decode()
    assert "Percy PassKit" in page and str(member.pass_id) in page


def test_a_refused_pass_claimed_again_across_a_broken_connection_is_issued_by_the_sweep(
    client, sandbox, settings, monkeypatch
):
    """SmartPages refused Guðrún's pass (issuing was off there, the mirror did not know yet). Issuing is back; her
    next click moves her member back to pending, and there the connection breaks. The claim, tried again, finds a
    pending member and shows "being prepared": the sweeps must find it due and issue it (it had no next attempt,
    so nothing ever tried it again)."""
    settings.CLAIM_RATE = "100000/m"
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=GUDRUN, batch_id=1, row=1)
    sandbox.update_template(str(club.pk), disableIssue=True)  # upstream only: the mirror still says it issues
    assert open_and_claim(client, path).status_code == 302
    assert Member.objects.get().status == Member.Status.FAILED
    sandbox.update_template(str(club.pk), disableIssue=False)
    retry, kills = issuing.member_issue_retry, []
    monkeypatch.setattr(issuing, "member_issue_retry", on_a_connection_killed_once(retry, kills))
    posted = open_and_claim(client, path)
    monkeypatch.setattr(issuing, "member_issue_retry", retry)
    assert kills == [1] and "Your pass is being prepared" in client.get(posted["Location"]).content.decode()

    later = timezone.now() + timedelta(hours=1)  # the recovery sweep, as beat runs it
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert issuing.member_issue_retry_stale() == 1

    gudrun = Member.objects.get()
    assert gudrun.status == Member.Status.ISSUED
    assert [p["id"] for p in sandbox.passes()] == [str(gudrun.pass_id)]
