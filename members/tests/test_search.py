"""The member search box (issue 9 item 1) and the member counts kept per template (issue 12 item 5)."""

import importlib

import pytest
from django.urls import reverse
from hypothesis import example, given
from hypothesis import strategies as st

from members.models import Member, TemplateMemberCount
from members.search_text import fold, member_search_text, search_key
from members.services import counts, issuing

from .factories import make_member, mirror_template

ICELANDIC = "aábdðeéfghiíjklmnoóprstuúvxyýþæöAÁBDÐEÉFGHIÍJKLMNOÓPRSTUÚVXYÝÞÆÖ -"


# --- folding, property-tested -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "written, typed",
    [
        ("Guðrún", "gudrun"),
        ("Þóra", "thora"),
        ("Ægir", "aegir"),
        ("Jón Þórsson", "jon thorsson"),
        ("Hörður Ýr", "hordur yr"),
        ("ÁSTA", "asta"),
        ("Søren Œdipe", "soren oedipe"),
        ("Straße", "strasse"),
    ],
)
def test_fold_spells_icelandic_letters_as_typed_without_them(written, typed):
    assert fold(written) == typed


@given(st.text())
def test_fold_is_idempotent(text):
    assert fold(fold(text)) == fold(text)


@given(st.text(), st.text())
@example("Guð", "rún")
def test_fold_works_character_by_character(left, right):
    # What makes substring search sound: a part of a name folds to a part of the folded name.
    assert fold(left + right) == fold(left) + fold(right)


@given(st.text(alphabet=ICELANDIC))
def test_folded_icelandic_is_plain_lowercase_ascii_whatever_the_case(text):
    folded = fold(text)
    assert folded.isascii() and folded == folded.lower()
    assert fold(text.upper()) == folded == fold(text.lower())


@given(st.text(alphabet=ICELANDIC, min_size=1), st.text(alphabet=ICELANDIC), st.text(alphabet=ICELANDIC))
def test_any_typed_part_of_a_name_is_found_in_its_search_text(part, before, after):
    stored = member_search_text(display_name=before + part + after, email="")
    key = search_key(part)
    # Whitespace is collapsed on both sides; a part that is only spaces is no search at all.
    assert key == "" or key in stored


# --- the search box on PostgreSQL ---------------------------------------------------------------------------
@pytest.fixture
def club(sandbox):
    return mirror_template()


@pytest.fixture
def people(club):
    return {
        "gudrun": make_member(club, name="Guðrún Ýr Jónsdóttir", email="gudrun@simnet.is"),
        "thora": make_member(club, name="Þóra Björk", email="thora@passkit.example", external_id="ABC-Þ-77"),
        "aegir": make_member(club, name="Ægir Örn", email="aegir@hi.is", phone="+3546612345"),
    }


def found(client, query: str) -> set[str]:
    response = client.get(reverse("members:member_list"), {"q": query})
    assert response.status_code == 200
    return {member.display_name.split()[0] for member in response.context["page"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typed, expected",
    [
        ("gudrun", {"Guðrún"}),
        ("GUÐRÚN", {"Guðrún"}),
        ("thora", {"Þóra"}),
        ("aegir", {"Ægir"}),
        ("orn", {"Ægir"}),
        ("jonsdottir", {"Guðrún"}),
        ("yr jons", {"Guðrún"}),
        ("simnet.is", {"Guðrún"}),
        ("passkit.example", {"Þóra"}),
        ("thora@", {"Þóra"}),
        ("@hi.is", {"Ægir"}),
        ("abc-þ-77", {"Þóra"}),
        ("ABC-Þ-77", {"Þóra"}),
        ("661 2345", {"Ægir"}),
        ("00354 661-2345", {"Ægir"}),
        ("nobody", set()),
    ],
)
def test_one_search_box_finds_people_as_they_are_typed(client, viewer, people, typed, expected):
    client.force_login(viewer)
    assert found(client, typed) == expected


@pytest.mark.django_db
def test_pass_id_prefix_of_eight_hex_characters_finds_the_member(client, viewer, people):
    client.force_login(viewer)
    pass_id = str(people["aegir"].pass_id)
    for typed in (pass_id[:8], pass_id[:8].upper(), pass_id[:13], pass_id.replace("-", "")[:20], pass_id):
        assert found(client, typed) == {"Ægir"}, typed
    # Seven characters are too short to be taken for a Pass ID prefix.
    assert found(client, pass_id[:7]) == set()


# --- counts kept per template -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_member_counts_are_kept_as_members_are_issued_and_reconciled(club, sandbox):
    for n in range(3):
        issuing.member_issue(
            template=club,
            values={"name": f"Anna {n}", "email": f"anna{n}@example.is"},
            external_id=f"anna-{n}",
            source=Member.Source.MANUAL,
        )
    # The same External ID again makes no member, and must not count one.
    issuing.member_issue(
        template=club,
        values={"name": "Anna", "email": "anna0@example.is"},
        external_id="anna-0",
        source=Member.Source.MANUAL,
    )
    assert TemplateMemberCount.objects.get(template=club).members == 3
    make_member(club, name="Imported outside the services")
    assert counts.template_member_counts_reconcile() == 1
    assert TemplateMemberCount.objects.get(template=club).members == 4 == Member.objects.filter(template=club).count()
    assert counts.template_member_counts_reconcile() == 0


@pytest.mark.django_db
def test_the_data_migration_fills_search_text_and_counts_of_existing_members(club):
    from django.apps import apps

    migration = importlib.import_module("members.migrations.0005_search_text_refresh_runs_bulk_actions_counts")
    member = make_member(club, name="Ásdís Þöll", email="asdis@simnet.is")
    Member.objects.filter(pk=member.pk).update(search_text="")  # as a row from before the column
    migration.fill_search_text_and_counts(apps, None)
    member.refresh_from_db()
    assert member.search_text == "asdis tholl\nasdis@simnet.is"
    assert TemplateMemberCount.objects.get(template=club).members == 1
