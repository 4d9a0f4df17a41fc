"""A claim whose database connection is killed part of the way (a database restart, a killed backend) is tried
once more on a fresh connection: the holder gets their pass, not an error page, and only one."""

import pytest

from conftest import terminate_own_backend
from links import claims
from members.models import Member

from .claim_factories import PERCY, link_path, mirror, open_and_claim

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_whose_connection_is_killed_mid_way_still_issues_one_pass(client, sandbox, settings, monkeypatch):
    settings.CLAIM_RATE = "100000/m"
    mirror()
    submit, kills = claims.claim_submit, []

    def submit_on_a_killed_connection(**kwargs):
        if not kills:
            terminate_own_backend()
            kills.append(1)
        return submit(**kwargs)

    monkeypatch.setattr(claims, "claim_submit", submit_on_a_killed_connection)
    response = open_and_claim(client, link_path(fields=PERCY))

    assert kills == [1]
    assert response.status_code == 302 and "/pass/" in response["Location"]
    member = Member.objects.get()
    assert member.status == Member.Status.ISSUED
    assert [p["id"] for p in sandbox.passes()] == [str(member.pass_id)]
    page = client.get(response["Location"]).content.decode()
    assert "Percy PassKit" in page and str(member.pass_id) in page
