"""One row of a campaign CSV (links/rows.py): which bad values cost the row its link, and which only the value."""

from __future__ import annotations

import pytest

from links.models import EXTERNAL_ID_TARGET, LinkBatch
from links.rows import RowRules
from members.models import AutofillSetting

from .factories import every_format_template

pytestmark = pytest.mark.django_db

HEADER = ["name", "kennitala", "website", "email", "id"]
MAPPING = {"name": "name", "kennitala": "kennitala", "website": "website", "email": "email", "id": EXTERNAL_ID_TARGET}
LEFT_OUT = " The link was made without it."
BAD_WEBSITE = "Vefsíða: “example.is” is not a valid web address. It must start with http:// or https://."


def rules_for(template, *, strict: bool = False) -> RowRules:
    return RowRules(LinkBatch(template=template, header=HEADER, mapping=MAPPING, strict=strict))


def test_a_bad_optional_value_is_left_out_of_the_link_with_a_warning_naming_the_field_and_the_value():
    row = rules_for(every_format_template()).check(1, ["Anna", "0101302989", "example.is", "anna@example.is", ""])
    assert row.error == ""
    assert row.fields == {"name": "Anna", "kennitala": "0101302989", "email": "anna@example.is"}
    assert row.notes == [f"Warning: {BAD_WEBSITE}{LEFT_OUT}"]


def test_a_strict_upload_refuses_the_row_instead():
    row = rules_for(every_format_template(), strict=True).check(1, ["Anna", "", "example.is", "", ""])
    assert (row.error, row.fields) == (BAD_WEBSITE, None)


def test_a_row_refused_for_a_mandatory_value_names_its_optional_problems_too():
    row = rules_for(every_format_template()).check(1, ["", "", "example.is", "", ""])
    assert row.error == f"Nafn is required. {BAD_WEBSITE}"


def test_a_bad_external_id_is_never_left_out():
    template = every_format_template()
    AutofillSetting.objects.create(template=template, source="email", field_identifier="email")
    row = rules_for(template).check(1, ["Anna", "", "", "", "not an address"])
    assert row.error.startswith("External ID: “not an address” is not a valid email address.")


def test_the_field_autofill_reads_is_never_left_out():
    # Without its address the row would have no External ID, and the same holder could enrol twice.
    template = every_format_template()
    AutofillSetting.objects.create(template=template, source="email", field_identifier="email")
    row = rules_for(template).check(1, ["Anna", "", "", "anna@", ""])
    assert row.error.startswith("Netfang: “anna@” is not a valid email address.")


def test_fields_under_a_template_rule_are_never_left_out():
    # Leaving out the address or kennitala would give a link to a row the template's rules refuse.
    template = every_format_template(allowed_domains=["hi.is"], min_age=18)
    row = rules_for(template).check(1, ["Anna", "0101302989", "", "anna@gmail.com", ""])
    assert row.error == "Netfang: “anna@gmail.com” is not allowed. Use an address at hi.is."
    row = rules_for(template).check(1, ["Anna", "12345", "", "anna@hi.is", ""])
    assert row.error.startswith("Kennitala: “12345” is not a kennitala.")
