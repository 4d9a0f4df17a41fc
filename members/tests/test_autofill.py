"""The "Auto fill External ID" setting: audit, derivation, conflict preview, backfill, command, permissions."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from members import selectors, services
from members.identity import InvalidIdentity
from members.models import AutofillBackfill, AutofillChange, AutofillSetting, Member
from members.services import autofill, issuing
from sandbox import DEMO_TEMPLATE_ID

from .factories import make_member, mirror_template

pytestmark = pytest.mark.django_db


def test_a_template_without_a_setting_reads_as_off_and_derives_nothing(club):
    setting = selectors.autofill_setting_for(template=club)
    assert setting.pk is None and setting.source == "off"
    assert selectors.external_id_for_values(template=club, values={"email": "a@b.is"}) is None


def test_a_change_is_audited_with_old_and_new(club, manager):
    autofill.autofill_setting_change(template=club, source="email", user=manager)
    autofill.autofill_setting_change(
        template=club, source="phone", already_enrolled_message="Þú átt kort.", user=manager
    )
    autofill.autofill_setting_change(
        template=club, source="phone", already_enrolled_message="Þú átt kort.", user=manager
    )

    changes = list(AutofillChange.objects.filter(template=club).order_by("id"))
    assert [(c.old_source, c.new_source, c.new_field_identifier, c.changed_by) for c in changes] == [
        ("off", "email", "email", manager),
        ("email", "phone", "phone", manager),
    ]
    assert changes[1].new_message == "Þú átt kort." and changes[1].old_message == ""
    setting = AutofillSetting.objects.get(template=club)
    assert (setting.source, setting.field_identifier, setting.updated_by) == ("phone", "phone", manager)


def test_the_setting_derives_normalised_external_ids_and_refuses_invalid_values(club):
    autofill.autofill_setting_change(template=club, source="phone")
    assert selectors.external_id_for_values(template=club, values={"phone": "00354 555-1234"}) == "+3545551234"
    assert selectors.external_id_for_values(template=club, values={"phone": "  "}) is None
    with pytest.raises(InvalidIdentity):
        selectors.external_id_for_values(template=club, values={"phone": "12"})


def test_a_template_without_a_phone_field_cannot_choose_phone(sandbox):
    pupils = mirror_template(sandbox.template_ids()[2])  # two EMAIL fields, no PHONE_NUMBER
    with pytest.raises(services.AutofillSettingError, match="no phone number input field"):
        autofill.autofill_setting_change(template=pupils, source="phone")
    with pytest.raises(services.AutofillSettingError, match="Choose which input field"):
        autofill.autofill_setting_change(template=pupils, source="email")
    setting = autofill.autofill_setting_change(template=pupils, source="email", field_identifier="guardian_email")
    assert setting.field_identifier == "guardian_email"
    assert not AutofillChange.objects.filter(template=pupils, new_source="phone").exists()


@pytest.fixture
def seeded(club):
    """Eleven members without External ID and one with, with deliberate duplicates in different spellings."""
    autofill.autofill_setting_change(template=club, source="email")
    make_member(club, email="held@example.com", external_id="held@example.com")
    fillable = [make_member(club, name=f"Unique {n}", email=f"unique{n}@example.com") for n in range(4)]
    pair = [make_member(club, email="Twin@Example.com"), make_member(club, email=" twin@example.COM ")]
    clash = make_member(club, email="HELD@example.com")  # what the member above already holds
    invalid = make_member(club, email="not an email")
    empty = make_member(club, email="")
    # Members whose pass is dead are left alone: an External ID would make a later claim show a void pass.
    make_member(club, email="failed@example.com", status=Member.Status.FAILED)
    make_member(club, email="voided@example.com", status=Member.Status.VOIDED)
    pending = make_member(club, email="pending@example.com", status=Member.Status.PENDING)
    return {"fillable": fillable + [pending], "pair": pair, "clash": clash, "invalid": invalid, "empty": empty}


def test_the_conflict_preview_counts_are_exact(club, seeded):
    preview = selectors.autofill_preview(template=club)

    assert preview.eligible == 10
    assert preview.would_fill == 5
    assert set(preview.fill) == {m.pk for m in seeded["fillable"]}
    assert preview.conflicting_members == 3
    assert [(c.external_id, sorted(m for m, _ in c.members)) for c in preview.conflicts] == [
        ("held@example.com", [seeded["clash"].pk]),
        ("twin@example.com", sorted(m.pk for m in seeded["pair"])),
    ]
    assert [m for m, _ in preview.invalid] == [seeded["invalid"].pk]
    assert preview.empty == 1 and preview.already_set == 1


def test_backfill_fills_the_rest_and_never_merges_conflicts(club, seeded, manager):
    run = autofill.autofill_backfill_request(template=club, user=manager)

    assert run.status == AutofillBackfill.Status.SUCCEEDED
    assert (run.total, run.filled, run.conflicts, run.invalid, run.empty) == (10, 5, 3, 1, 1)
    assert run.done == run.total
    for member in seeded["fillable"]:
        member.refresh_from_db()
        assert member.external_id == member.email
    for member in [*seeded["pair"], seeded["clash"], seeded["invalid"], seeded["empty"]]:
        member.refresh_from_db()
        assert member.external_id is None
    assert Member.objects.filter(template=club, external_id="held@example.com").count() == 1
    assert selectors.autofill_preview(template=club).would_fill == 0


def test_backfill_counts_a_member_whose_id_was_taken_meanwhile_as_a_conflict(club, seeded, manager):
    backfill = AutofillBackfill.objects.create(template=club, source="email", field_identifier="email")
    preview = selectors.autofill_preview(template=club)
    first_id, first_external_id = next(iter(preview.fill.items()))
    # A claim takes that External ID between the preview and the write.
    make_member(club, email=first_external_id, external_id=first_external_id)

    run = autofill.autofill_backfill_run(backfill=backfill)

    assert run.status == "succeeded"
    assert Member.objects.get(pk=first_id).external_id is None
    assert run.filled == 4 and run.conflicts == 4  # the three known, plus this one


def test_backfill_needs_autofill_on(club, manager):
    with pytest.raises(services.AutofillSettingError, match="Turn autofill on"):
        autofill.autofill_backfill_request(template=club, user=manager)


def test_a_viewer_sees_the_setting_but_cannot_change_it(club, viewer, client):
    client.force_login(viewer)
    url = reverse("members:autofill_settings", args=[club.pk])

    page = client.get(url)
    assert page.status_code == 200
    assert b"changing it needs the manager role" in page.content and b'id="autofill-form"' not in page.content

    assert client.post(url, {"source": "email"}).status_code == 403
    assert client.post(reverse("members:autofill_backfill", args=[club.pk])).status_code == 403
    assert not AutofillSetting.objects.filter(template=club).exists()


def test_a_manager_changes_the_setting_on_the_page_and_sees_the_audit_line(club, manager, client):
    client.force_login(manager)
    url = reverse("members:autofill_settings", args=[club.pk])
    make_member(club, email="a@example.com")

    preview = client.post(
        url, {"source": "email", "field_identifier": "", "already_enrolled_message": "", "preview": "1"}
    )
    assert b"Preview of the proposed setting" in preview.content
    assert 'data-count="fill">1<' in preview.content.decode()
    assert b'id="autofill-confirm"' not in preview.content  # nothing to confirm: a preview only
    assert not AutofillSetting.objects.filter(template=club).exists()  # previewing saves nothing

    # Members without an External ID: saving asks first, showing what the setting means for them.
    step = client.post(url, {"source": "email", "field_identifier": "", "already_enrolled_message": ""})
    assert 'id="autofill-confirm"' in step.content.decode()
    assert 'id="autofill-form"' not in step.content.decode()  # the confirmation is the one way on
    assert not AutofillSetting.objects.filter(template=club).exists()
    response = client.post(
        url,
        {"source": "email", "field_identifier": "", "already_enrolled_message": "", "confirm": "1", "fill": "0"},
        follow=True,
    )
    text = response.content.decode()
    assert "Autofill setting saved." in text
    assert "<td>maria</td><td>Off</td><td>Email address (email)</td>" in text
    assert 'data-count="fill">1<' in text and 'id="backfill-button"' in text

    done = client.post(reverse("members:autofill_backfill", args=[club.pk]), follow=True)
    assert "1 External ID filled in" in done.content.decode()
    assert Member.objects.get(template=club).external_id == "a@example.com"


def test_the_page_refuses_a_source_the_template_cannot_use(sandbox, manager, client):
    pupils = mirror_template(sandbox.template_ids()[2])
    client.force_login(manager)
    page = client.post(reverse("members:autofill_settings", args=[pupils.pk]), {"source": "phone"})
    assert "no phone number input field" in page.content.decode()
    assert "This template has no phone number input field, so it cannot use this source." in page.content.decode()


def test_the_command_shows_and_sets_the_setting(club, capsys):
    call_command("external_id_autofill", "--template", DEMO_TEMPLATE_ID, "--json")
    assert json.loads(capsys.readouterr().out)["source"] == "off"

    call_command("external_id_autofill", "--template", DEMO_TEMPLATE_ID, "--source", "email", "--json")
    shown = json.loads(capsys.readouterr().out)
    assert shown["source"] == "email" and shown["field_identifier"] == "email" and shown["changed"] is True
    change = AutofillChange.objects.get(template=club)
    assert (change.old_source, change.new_source, change.changed_via) == ("off", "email", "command")

    with pytest.raises(CommandError, match="no such|No template"):
        call_command("external_id_autofill", "--template", "00000000-0000-0000-0000-000000000000")


# --- a backfill that can no longer finish --------------------------------------------------------------------
def backfill_left(template, status: str, *, age: timedelta) -> AutofillBackfill:
    """A backfill row as a lost task leaves it: queued (never started) or running (worker killed)."""
    run = AutofillBackfill.objects.create(template=template, source="email", field_identifier="email", status=status)
    since = timezone.now() - age
    AutofillBackfill.objects.filter(pk=run.pk).update(
        queued_at=since, started_at=since if status == AutofillBackfill.Status.RUNNING else None
    )
    return run


@pytest.mark.parametrize("status", [AutofillBackfill.Status.QUEUED, AutofillBackfill.Status.RUNNING])
def test_a_backfill_stuck_past_the_bound_is_marked_failed_and_a_new_one_runs(club, seeded, manager, status):
    stuck = backfill_left(club, status, age=autofill.backfill_abandoned_after() + timedelta(minutes=1))

    run = autofill.autofill_backfill_request(template=club, user=manager)

    assert run.pk != stuck.pk and run.status == AutofillBackfill.Status.SUCCEEDED and run.filled == 5
    stuck.refresh_from_db()
    assert stuck.status == AutofillBackfill.Status.FAILED and stuck.finished_at is not None
    assert stuck.error.startswith("Abandoned: no progress for over")
    # Its task turning up late does nothing: the row stays failed, next to the finished new one.
    assert autofill.autofill_backfill_run(backfill=stuck).status == AutofillBackfill.Status.FAILED
    assert AutofillBackfill.objects.get(pk=stuck.pk).done == 0


@pytest.mark.parametrize("status", [AutofillBackfill.Status.QUEUED, AutofillBackfill.Status.RUNNING])
def test_a_backfill_still_within_the_bound_blocks_a_second_one(club, seeded, manager, status):
    active = backfill_left(club, status, age=timedelta(minutes=5))

    with pytest.raises(services.AutofillSettingError, match="already running"):
        autofill.autofill_backfill_request(template=club, user=manager)

    assert AutofillBackfill.objects.get(pk=active.pk).status == status
    assert AutofillBackfill.objects.count() == 1


def test_the_bound_outlasts_the_workers_hard_time_limit(settings):
    settings.CELERY_TASK_TIME_LIMIT = 3 * 3600
    assert autofill.backfill_abandoned_after() > timedelta(hours=3)
    settings.CELERY_TASK_TIME_LIMIT = 60
    assert autofill.backfill_abandoned_after() == autofill.BACKFILL_ABANDONED_AFTER == timedelta(minutes=30)


@pytest.mark.django_db(transaction=True)  # the enqueue runs on commit, which needs real commits
def test_a_backfill_whose_task_cannot_be_sent_stays_queued_and_the_request_does_not_fail(
    sandbox, manager, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from celery import current_app
    from kombu.exceptions import OperationalError

    club = mirror_template()
    autofill.autofill_setting_change(template=club, source="email")
    make_member(club, email="a@example.com")
    monkeypatch.setattr(autofill, "BACKFILL_INLINE_LIMIT", 0)

    def broker_away(*args, **kwargs):
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(current_app, "send_task", broker_away)
    with django_capture_on_commit_callbacks(execute=True):
        run = autofill.autofill_backfill_request(template=club, user=manager)

    assert AutofillBackfill.objects.get(pk=run.pk).status == AutofillBackfill.Status.QUEUED
    assert "Could not send task members.autofill_backfill" in caplog.text


def test_a_backfill_left_queued_is_sent_again_by_the_sweep_and_runs_once(
    club, seeded, settings, django_capture_on_commit_callbacks
):
    left = backfill_left(club, AutofillBackfill.Status.QUEUED, age=timedelta(seconds=settings.SWEEP_OVERDUE_AFTER + 1))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert autofill.autofill_backfills_resend_queued() == 1
    assert len(callbacks) == 1

    done = autofill.autofill_backfill_run(backfill=left)  # what the re-sent task does
    assert (done.status, done.filled) == (AutofillBackfill.Status.SUCCEEDED, 5)
    # The original task arriving late finds the row finished and runs nothing again.
    late = autofill.autofill_backfill_run(backfill=AutofillBackfill.objects.get(pk=left.pk))
    assert (late.status, late.filled, late.done) == (done.status, 5, done.done)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert autofill.autofill_backfills_resend_queued() == 0


def test_a_backfill_queued_moments_ago_is_left_to_its_own_task(club, seeded, django_capture_on_commit_callbacks):
    backfill_left(club, AutofillBackfill.Status.QUEUED, age=timedelta(seconds=5))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert autofill.autofill_backfills_resend_queued() == 0
    assert callbacks == []


# --- an External ID typed by staff ---------------------------------------------------------------------------
def test_an_explicit_external_id_is_normalised_like_autofill_would(club):
    assert selectors.explicit_external_id(template=club, raw="  Laura@X.com ") == "Laura@X.com"  # autofill off
    assert selectors.explicit_external_id(template=club, raw="   ") is None
    with pytest.raises(InvalidIdentity, match="longer than 254"):
        selectors.explicit_external_id(template=club, raw="x" * 255)

    autofill.autofill_setting_change(template=club, source="email")
    assert selectors.explicit_external_id(template=club, raw="  Laura@X.com ") == "laura@x.com"
    assert selectors.explicit_external_id(template=club, raw="") is None
    with pytest.raises(InvalidIdentity):
        selectors.explicit_external_id(template=club, raw="SUND-0042")

    autofill.autofill_setting_change(template=club, source="phone")
    assert selectors.explicit_external_id(template=club, raw="00354 555-1234") == "+3545551234"
    with pytest.raises(InvalidIdentity):
        selectors.explicit_external_id(template=club, raw="12")


def test_staff_add_stores_the_normalised_external_id_and_finds_the_same_holder_again(club, sandbox, manager):
    autofill.autofill_setting_change(template=club, source="email")
    values = {"name": "Laura Loopy", "email": "laura@x.com"}

    first = issuing.member_add(template=club, values=values, external_id="Laura@X.com", user=manager).member
    second = issuing.member_add(template=club, values=values, external_id="LAURA@x.COM ", user=manager)

    assert first.external_id == "laura@x.com" and second.member.pk == first.pk
    assert second.kind == issuing.IssueKind.ALREADY_ENROLLED
    assert sandbox.passes(DEMO_TEMPLATE_ID)[0]["externalIdentifier"] == "laura@x.com"
    with pytest.raises(InvalidIdentity):
        issuing.member_add(template=club, values=values, external_id="not an email", user=manager)
    assert Member.objects.count() == 1
