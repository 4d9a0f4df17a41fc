"""A backfill too large to run in the request goes to a real Celery worker and shows progress."""

import pytest
from django.urls import reverse

from conftest import wait_for
from members.models import AutofillBackfill, Member
from members.services import autofill

from .factories import make_member, mirror_template

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_large_backfill_runs_in_the_worker(celery_worker_process, live_sandbox, manager, client, monkeypatch):
    monkeypatch.setattr(autofill, "BACKFILL_INLINE_LIMIT", 5)
    club = mirror_template()
    autofill.autofill_setting_change(template=club, source="email")
    for n in range(30):
        make_member(club, email=f"holder{n}@example.com")
    make_member(club, email="holder0@example.com")  # a duplicate: both stay without External ID
    client.force_login(manager)

    response = client.post(reverse("members:autofill_backfill", args=[club.pk]), follow=True)
    assert "Filling in External IDs; the progress shows below." in response.content.decode()
    backfill = AutofillBackfill.objects.get()
    assert (
        'data-run-status="{}"'.format(reverse("members:backfill_status", args=[backfill.pk]))
        in response.content.decode()
    )

    wait_for(
        lambda: client.get(reverse("members:backfill_status", args=[backfill.pk])).json()["finished"],
        timeout=60,
        message="the backfill to finish",
    )
    state = client.get(reverse("members:backfill_status", args=[backfill.pk])).json()
    assert (state["status"], state["total"], state["done"], state["filled"], state["conflicts"]) == (
        "succeeded",
        31,
        31,
        29,
        2,
    )
    assert Member.objects.filter(template=club, external_id__isnull=False).count() == 29
