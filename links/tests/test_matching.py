"""Columns matched to input fields by identifier, label or PassKit name, whatever the case and spacing."""

import pytest

from links import selectors
from links.models import EXTERNAL_ID_TARGET

from .factories import demo_template, every_format_template

pytestmark = pytest.mark.django_db


def test_passkit_headers_fill_the_fields_they_name(sandbox):
    header = ["person.displayName", "person.emailAddress", "person.mobileNumber", "members.member.externalId"]
    assert selectors.link_columns_auto_match(template=demo_template(), header=header) == {
        "person.displayName": "name",
        "person.emailAddress": "email",
        "person.mobileNumber": "phone",
        "members.member.externalId": EXTERNAL_ID_TARGET,
    }


def test_identifiers_and_labels_match_whatever_the_case_and_spaces():
    template = every_format_template()
    header = ["NAFN", "kenni tala", "Fæðingar-dagur", "member_number", "Athugasemd", "Something else"]
    assert selectors.link_columns_auto_match(template=template, header=header) == {
        "NAFN": "name",
        "kenni tala": "kennitala",
        "Fæðingar-dagur": "birthday",
        "member_number": "memberNumber",
        "Athugasemd": "note",
    }


def test_a_field_is_filled_by_one_column_only_the_closest_match(sandbox):
    # "email" is the identifier, "person.emailAddress" only an alias: the identifier wins.
    header = ["person.emailAddress", "email", "Name"]
    assert selectors.link_columns_auto_match(template=demo_template(), header=header) == {
        "email": "email",
        "Name": "name",
    }
