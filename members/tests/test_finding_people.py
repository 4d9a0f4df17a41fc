"""Issue 20, goal 5: staff find the holder as they have them — a Pass ID in any spelling, the end of a phone
number — and names sort in Icelandic alphabetical order, on PostgreSQL here and on SQLite in a subprocess."""

import uuid

import pytest

from conftest import run_on_sqlite
from members.collation import icelandic_compare, icelandic_sort_key
from members.selectors import MemberFilters, member_list

from .factories import make_member

NAMES_IN_ICELANDIC_ORDER = [
    "Anna",
    "Anna Ósk",
    "Ásta",
    "Björk",
    "Davíð",
    "Ðalla",
    "Eva",
    "Élín",
    "Orri",
    "Ómar",
    "Yrsa",
    "Ýr",
    "Þorsteinn",
    "Þórður",
    "Þröstur",
    "Ævar",
    "Örn",
]
PASS_ID = uuid.UUID("48581236-9c1e-4b7a-8f00-3a9d2c7b1e55")


def found(q: str) -> list[str]:
    return sorted(member.display_name for member in member_list(filters=MemberFilters(q=q)))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typed",
    [
        str(PASS_ID),
        str(PASS_ID).upper(),
        PASS_ID.hex,
        PASS_ID.hex.upper(),
        " 48581236-9C1E-4B7A-8F00-3A9D2C7B1E55 ",
    ],
)
def test_a_full_pass_id_finds_its_member_in_any_case_with_or_without_dashes(club, typed):
    make_member(club, name="Björk Guðmundsdóttir", pass_id=PASS_ID)
    make_member(club, name="Someone Else")
    assert found(typed) == ["Björk Guðmundsdóttir"]


@pytest.mark.django_db
@pytest.mark.parametrize("typed", ["1236", "81236", "581236", "8581236", "548581236"])
def test_the_last_four_to_nine_digits_of_a_phone_find_the_holder(club, typed):
    make_member(club, name="Guðrún Jónsdóttir", phone="+3548581236")
    make_member(club, name="Other", phone="+3546991234")
    assert found(typed) == ["Guðrún Jónsdóttir"]


@pytest.mark.django_db
def test_digits_are_tried_as_a_pass_id_prefix_and_a_phone_ending_and_both_are_found(club):
    make_member(club, name="By Pass ID", pass_id=PASS_ID)  # starts 48581236
    make_member(club, name="By phone", phone="+3548581236")  # ends 48581236
    make_member(club, name="Neither", phone="+3546991234")
    assert found("48581236") == ["By Pass ID", "By phone"]


@pytest.mark.django_db
def test_names_sort_in_icelandic_alphabetical_order(club):
    for name in reversed(NAMES_IN_ICELANDIC_ORDER):
        make_member(club, name=name)
    ascending = [m.display_name for m in member_list(filters=MemberFilters(sort="name"))]
    descending = [m.display_name for m in member_list(filters=MemberFilters(sort="-name"))]
    assert ascending == NAMES_IN_ICELANDIC_ORDER
    assert descending == NAMES_IN_ICELANDIC_ORDER[::-1]


def test_the_sqlite_collation_agrees_with_the_icelandic_alphabet():
    shuffled = sorted(NAMES_IN_ICELANDIC_ORDER, key=lambda name: name[::-1])
    assert sorted(shuffled, key=icelandic_sort_key) == NAMES_IN_ICELANDIC_ORDER
    assert icelandic_compare("Þröstur", "Ævar") < 0 and icelandic_compare("Ævar", "Þröstur") > 0
    assert icelandic_compare("anna", "Anna") < 0 and icelandic_compare("Eva", "Eva") == 0


SQLITE_FINDING = """
import uuid
from django.core.management import call_command
from django.utils import timezone
from members.models import Member
from members.selectors import MemberFilters, member_list
from templates_sync.models import PassTemplate

call_command("migrate", verbosity=0)
now = timezone.now()
club = PassTemplate.objects.create(
    id=uuid.uuid4(), type="MEMBER", name="Club", status="ACTIVE", raw={}, content_hash="x",
    first_seen_at=now, changed_at=now,
)
pass_id = uuid.UUID("48581236-9c1e-4b7a-8f00-3a9d2c7b1e55")
names = %(names)r
for index, name in enumerate(reversed(names)):
    Member.objects.create(
        template=club, display_name=name, source="manual", status="issued",
        pass_id=pass_id if name == "Björk" else uuid.uuid4(), phone="+3548581236" if name == "Eva" else "",
    )
def shown(**filters):
    return [m.display_name for m in member_list(filters=MemberFilters(**filters))]
for typed in (str(pass_id), str(pass_id).upper(), pass_id.hex, pass_id.hex.upper(), "48581236-9c1e", "581236", "48581236"):
    print(typed, "=", sorted(shown(q=typed)))
print("order ok" if shown(sort="name") == names else shown(sort="name"))
print("reverse ok" if shown(sort="-name") == names[::-1] else shown(sort="-name"))
"""


@pytest.mark.slow
def test_pass_ids_phone_endings_and_icelandic_order_on_sqlite(tmp_path):
    script = SQLITE_FINDING % {"names": NAMES_IN_ICELANDIC_ORDER}
    printed = run_on_sqlite(script, tmp_path)
    hex_id = PASS_ID.hex
    assert printed == [
        f"{PASS_ID} = ['Björk']",
        f"{str(PASS_ID).upper()} = ['Björk']",
        f"{hex_id} = ['Björk']",
        f"{hex_id.upper()} = ['Björk']",
        "48581236-9c1e = ['Björk']",
        "581236 = ['Eva']",
        "48581236 = ['Björk', 'Eva']",
        "order ok",
        "reverse ok",
    ]
