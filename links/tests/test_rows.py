"""One row of a campaign CSV (links/rows.py): which bad values cost the row its link, and which only the value."""

from __future__ import annotations

import pytest

from links.models import EXTERNAL_ID_TARGET, LinkBatch
from links.rows import Row, RowRules
from members.models import AutofillSetting

from .factories import every_format_template, template_with_fields

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
    row = rules_for(template).check(1, ["Anna", "", "", "", "x" * 300])
    assert row.error.startswith("External ID: “xxx")
    assert "is longer than 254 characters" in row.error


def test_an_explicit_external_id_wins_over_autofill_by_email_even_when_it_is_no_email():
    # PassKit's External IDs are the program's own (member numbers): the column wins for its row, and
    # autofill fills only the rows without one. An address in the column is still normalised as autofill would.
    template = every_format_template()
    AutofillSetting.objects.create(template=template, source="email", field_identifier="email")
    rules = rules_for(template)
    member_number = rules.check(1, ["Anna", "", "", "anna@example.is", " M-1001 "])
    assert (member_number.error, member_number.external_id) == ("", "M-1001")
    assert member_number.explicit_external_id == "M-1001"
    address = rules.check(2, ["Anna", "", "", "anna@example.is", "Anna@Example.IS"])
    assert address.external_id == "anna@example.is"
    autofilled = rules.check(3, ["Bára", "", "", "Bara@Example.is", ""])
    assert (autofilled.external_id, autofilled.explicit_external_id) == ("bara@example.is", None)


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


def _name_email_phone_template(*, email_mandatory: bool = True):
    """A template whose every field has a fast check (TEXT, EMAIL, PHONE_NUMBER), as PassKit's campaigns are."""
    return template_with_fields(
        [
            ("email", "Email", "EMAIL", "ISSUER", email_mandatory),
            ("name", "Name", "TEXT", "ISSUER", True),
            ("phone", "Phone", "PHONE_NUMBER", "ISSUER", False),
        ],
        name="Klúbbur",
    )


TRICKY_ROWS = [
    ["anna@example.is", "Anna", "+354 820 0002"],
    ["  Anna@Example.IS ", " Anna ", "820-0003"],
    ["anna@example.is", "Anna", "+354 820 0002"],  # the same holder again
    ["anna@example.is", "Anna", ""],  # a blank optional value
    ["", "Anna", "8200002"],  # a required value missing
    ["anna@", "Anna", "8200002"],  # an address the fast path leaves to the full check, which refuses it
    ["jón@dæmi.is", "Jón", "8200002"],  # Unicode: the full check
    ["anna@example.is", "Anna", "555-ABCD"],  # letters in a phone number
    ["anna@example.is", "Anna", "+44 20 7946 0958"],  # another country: phonenumbers
    ["anna@example.is", "An\x00na", "8200002"],  # NUL
    ["anna@example.is", "A" * 1001, "8200002"],  # too long
    ["", " ", ""],  # an empty row
    ["anna@example.is", "Anna", "8200002", "extra"],  # more cells than the header
    ["a--b@example.is", "Anna", "8200002"],
    ["anna@example.test", "Anna", "8200002"],  # a special-use domain
]


@pytest.mark.parametrize(
    ("header", "email_mandatory", "autofill"),
    [
        (["email", "name", "phone"], True, None),
        (["email", "name", "phone"], False, None),
        (["email", "name", "phone"], False, "email"),  # the External ID from the address
        (["email", "name", "phone"], True, "phone"),  # from the number
        (["name", "email", "phone"], True, None),  # columns in another order than the fields: row by row
    ],
)
def test_checking_rows_in_a_group_gives_what_checking_them_one_by_one_gives(header, email_mandatory, autofill):
    template = _name_email_phone_template(email_mandatory=email_mandatory)
    if autofill:
        AutofillSetting.objects.create(template=template, source=autofill, field_identifier=autofill)
    mapping = {column: column for column in header}
    rules = RowRules(LinkBatch(template=template, header=header, mapping=mapping))
    order = [HEADER_ORDER.index(column) for column in header]
    items = [(number, [cells[i] for i in order] + cells[3:]) for number, cells in enumerate(TRICKY_ROWS, start=1)]
    one_by_one = [rules.check(number, list(cells)) for number, cells in items]
    in_a_group = rules.check_many([(number, list(cells)) for number, cells in items])
    assert [_as_dict(row) for row in in_a_group] == [_as_dict(row) for row in one_by_one]
    assert rules.fast_fields == (header == HEADER_ORDER)
    if autofill:
        assert in_a_group[0].external_id == {"email": "anna@example.is", "phone": "+3548200002"}[autofill]


HEADER_ORDER = ["email", "name", "phone"]


@pytest.mark.parametrize("autofill", [None, "email"])
def test_a_one_field_template_checks_a_group_as_one_by_one(autofill):
    # One field: the fast path's key has a single value (and two rows with one address are one holder).
    template = template_with_fields([("email", "Email", "EMAIL", "ISSUER", True)], name="Póstlisti")
    if autofill:
        AutofillSetting.objects.create(template=template, source=autofill, field_identifier="email")
    rules = RowRules(LinkBatch(template=template, header=["email"], mapping={"email": "email"}))
    assert rules.fast_fields
    items = [(1, ["anna@example.is"]), (2, [" Anna@Example.IS "]), (3, ["bjork@example.is"]), (4, [""])]
    one_by_one = [rules.check(number, list(cells)) for number, cells in items]
    in_a_group = rules.check_many([(number, list(cells)) for number, cells in items])
    assert [_as_dict(row) for row in in_a_group] == [_as_dict(row) for row in one_by_one]
    assert in_a_group[0].digest == in_a_group[1].digest != in_a_group[2].digest
    assert in_a_group[3].error  # a required value missing


def _as_dict(row: Row) -> dict:
    return {name: getattr(row, name) for name in Row.__slots__}


NO_PHONE_NOTE = (
    "Warning: no phone number in “Phone”, which autofill reads to recognise the holder: each time this link is "
    "opened and claimed, it makes another pass."
)


@pytest.mark.parametrize("group", [False, True])
def test_a_row_without_the_value_autofill_reads_is_linked_with_a_warning_that_it_makes_a_pass_each_time(group):
    template = _name_email_phone_template()
    AutofillSetting.objects.create(template=template, source="phone", field_identifier="phone")
    rules = RowRules(LinkBatch(template=template, header=HEADER_ORDER, mapping={c: c for c in HEADER_ORDER}))
    items = [(1, ["anna@example.is", "Anna", "820 0002"]), (2, ["bjork@example.is", "Björk", ""])]
    rows = rules.check_many(items) if group else [rules.check(number, cells) for number, cells in items]
    assert [(row.error, row.external_id, row.notes) for row in rows] == [
        ("", "+3548200002", []),
        ("", None, [NO_PHONE_NOTE]),
    ]


def test_no_such_warning_where_the_link_has_another_way_to_recognise_the_holder():
    template = _name_email_phone_template()
    AutofillSetting.objects.create(template=template, source="phone", field_identifier="phone")
    header = [*HEADER_ORDER, "member"]
    mapping = {**{c: c for c in HEADER_ORDER}, "member": EXTERNAL_ID_TARGET}
    explicit = RowRules(LinkBatch(template=template, header=header, mapping=mapping))
    assert explicit.check(1, ["anna@example.is", "Anna", "", "M-1001"]).notes == []  # its own External ID
    one_pass_per_row = RowRules(
        LinkBatch(pk=7, template=template, header=HEADER_ORDER, mapping={c: c for c in HEADER_ORDER}, single_use=True)
    )
    assert one_pass_per_row.check(1, ["anna@example.is", "Anna", ""]).notes == []
    typed = template_with_fields(
        [("name", "Name", "TEXT", "ISSUER", True), ("phone", "Phone", "PHONE_NUMBER", "MEMBER", True)], name="Skráning"
    )
    AutofillSetting.objects.create(template=typed, source="phone", field_identifier="phone")
    holder_types_it = RowRules(LinkBatch(template=typed, header=["name"], mapping={"name": "name"}))
    assert holder_types_it.check(1, ["Anna"]).notes == []  # the claim page asks the holder for the number


def test_an_optional_value_the_holder_enters_is_not_asked_for_so_its_absence_is_warned_of():
    template = template_with_fields(
        [("name", "Name", "TEXT", "ISSUER", True), ("phone", "Phone", "PHONE_NUMBER", "MEMBER", False)], name="Skráning"
    )
    AutofillSetting.objects.create(template=template, source="phone", field_identifier="phone")
    rules = RowRules(LinkBatch(template=template, header=["name"], mapping={"name": "name"}))
    assert rules.check(1, ["Anna"]).notes == [NO_PHONE_NOTE]
