"""The template a claim reads on every request: the copy a process keeps is used only while both of its rows
(the template and its autofill setting) are exactly the ones the database holds."""

import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conftest import run_on_sqlite
from members import selectors, template_rows
from members.models import AutofillSetting
from members.services import autofill
from templates_sync.models import PassTemplate

pytestmark = pytest.mark.django_db


def read(template: PassTemplate):
    return selectors.template_with_autofill_setting(template_id=template.pk)


def test_an_unchanged_template_costs_one_version_check_and_comes_back_as_stored(club):
    template_rows.forget_all()
    first, _setting = read(club)
    with CaptureQueriesContext(connection) as queries:
        again, setting = read(club)
    assert len(queries) == 1 and "xmin" in queries[0]["sql"]
    assert again is not first
    assert (again.pk, again.name, again.input_fields) == (club.pk, club.name, club.input_fields)
    assert setting.source == "off" and setting.pk is None and setting.template is again


def test_every_write_to_either_row_is_read_at_once_even_inside_one_transaction(club, manager):
    # The whole test is one transaction: every version written here has the same xmin, so only the row's
    # place (ctid) tells them apart. A check of xmin alone would hand back the first copy each time.
    read(club)
    PassTemplate.objects.filter(pk=club.pk).update(disable_issue=True)
    assert read(club)[0].issue_refusal_reason == "Issuing new passes is disabled for this template on SmartPages."
    PassTemplate.objects.filter(pk=club.pk).update(disable_issue=False, name="Klúbburinn")
    template, setting = read(club)
    assert (template.issue_refusal_reason, template.name, setting.source) == ("", "Klúbburinn", "off")

    autofill.autofill_setting_change(
        template=club, source="email", already_enrolled_message="Welcome back", user=manager
    )
    template, setting = read(club)
    assert (setting.source, setting.field_identifier, setting.message_for("en")) == ("email", "email", "Welcome back")
    assert template.autofill_setting is setting  # the caller's own copy, linked both ways
    autofill.autofill_setting_change(template=club, source="phone", user=manager)
    assert read(club)[1].source == "phone"
    AutofillSetting.objects.filter(template=club).update(source="off")
    assert read(club)[1].source == "off"
    AutofillSetting.objects.filter(template=club).delete()
    assert read(club)[1].pk is None


@pytest.mark.django_db(transaction=True)
def test_a_version_committed_on_another_connection_is_read(club):
    read(club)

    def write_elsewhere():  # as another web process or a sync worker would, on a connection of its own
        PassTemplate.objects.filter(pk=club.pk).update(name="Annað nafn")
        connection.close()

    writer = threading.Thread(target=write_elsewhere)
    writer.start()
    writer.join()
    assert read(club)[0].name == "Annað nafn"


def test_what_one_caller_sets_on_its_copies_never_reaches_the_next(club, manager):
    autofill.autofill_setting_change(template=club, source="email", user=manager)
    template, setting = read(club)
    template.name, setting.source = "changed in one request", "phone"
    again, setting_again = read(club)
    assert (again.name, setting_again.source) == (club.name, "email")


def test_a_template_not_in_the_mirror_reads_as_none(club):
    assert selectors.template_with_autofill_setting(template_id=uuid.uuid4()) is None
    assert selectors.template_with_autofill_setting(template_id=str(club.pk)) is not None


SQLITE_READ = """
import uuid
from django.core.management import call_command
from django.utils import timezone
from members.models import AutofillSetting
from members.selectors import template_with_autofill_setting
from templates_sync.models import PassTemplate

call_command("migrate", verbosity=0)
now = timezone.now()
club = PassTemplate.objects.create(
    id=uuid.uuid4(), type="MEMBER", name="Club", status="ACTIVE", raw={}, content_hash="x",
    first_seen_at=now, changed_at=now,
)
print(template_with_autofill_setting(template_id=club.pk)[1].source)
AutofillSetting.objects.create(template=club, source="email", field_identifier="email")
PassTemplate.objects.filter(pk=club.pk).update(name="Klúbbur")
template, setting = template_with_autofill_setting(template_id=club.pk)
print(template.name, setting.source)
print(template_with_autofill_setting(template_id=uuid.uuid4()))
"""


@pytest.mark.slow
def test_the_embedded_default_reads_the_database_each_time(tmp_path):
    assert run_on_sqlite(SQLITE_READ, tmp_path) == ["off", "Klúbbur email", "None"]
