"""The member search box (issue 9 item 1) and the member counts kept per template (issue 12 item 5)."""

import importlib
import re

import pytest
from django.db import connection
from django.urls import reverse
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from conftest import run_on_sqlite
from members.models import Member, TemplateMemberCount
from members.search_text import (
    SEPARATOR,
    WORD_SEPARATORS,
    anchors,
    anchors_tsquery,
    fold,
    key_anchors,
    member_search_text,
    search_key,
)
from members.selectors import MemberFilters, member_list
from members.services import counts, issuing

from .factories import make_member

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


# --- anchors: the index behind a search with a separator in it ----------------------------------------------
# Names and addresses as staff write and type them: Icelandic letters, digits, every separator, other scripts.
TYPED = ICELANDIC + "0123456789" + WORD_SEPARATORS + "ŁøΩЖ中"


@given(st.text(alphabet=TYPED), st.text(alphabet=TYPED), st.data())
def test_every_typed_part_has_only_anchors_its_search_text_has(name, email, data):
    # What makes the anchor lookup sound: it narrows the search down to members that may hold the key, never
    # past one that does.
    stored = member_search_text(display_name=name, email=email)
    part = data.draw(st.sampled_from(stored.split(SEPARATOR)))
    start = data.draw(st.integers(0, len(part)))
    key = search_key(part[start : data.draw(st.integers(start, len(part)))])
    assert key in stored
    assert set(key_anchors(key)) <= anchors(stored)


@pytest.mark.parametrize(
    "key, expected",
    [
        ("gudrun", []),  # one word: only the trigram index can find it inside a word
        ("gudrun yr jonsdottir", [" yr", " jonsd", "\n nurdu", "\n ry"]),
        ("run yr jons", [" yr", " jon", "\n nur", "\n ry"]),  # cut-off words: what is sure of them
        ("simnet.is", ["\n.tenmi"]),  # ".is" may go on (".isl"): two letters give no anchor
        ("@hi.is", ["@hi", "\n.ih"]),
        ("a b", []),
        ("thora@", ["\n@aroht"]),
        ("ra@", []),  # cut off and too short: the trigram index
    ],
)
def test_the_anchors_of_a_query(key, expected):
    assert key_anchors(key) == expected


@pytest.mark.django_db
def test_quotes_and_backslashes_in_a_query_reach_postgresql_intact(club):
    member = make_member(club, name="Seán O'Brien\\Þór-Ýr", email="sean.o'brien@mail.example")
    key = search_key("o'brien\\thor-yr")
    assert key_anchors(key) == ["'brien", "\\thor", "\n\\neirb", "\n-roht"]  # "-yr": cut off, too short
    with connection.cursor() as cursor:
        cursor.execute("SELECT member_search_anchors(%s) @@ %s::tsquery", [member.search_text, anchors_tsquery(key)])
        assert cursor.fetchone()[0] is True
    assert list(member_list(filters=MemberFilters(q="O'BRIEN\\thor-yr"))) == [member]
    assert list(member_list(filters=MemberFilters(q="n.o'brien@"))) == [member]


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=TYPED), st.text().map(lambda text: text.replace("\x00", "")))
@example("Guðrún Ýr Jónsdóttir", "gudrun.5@simnet.is")
@example("a..b--c[]d\\e^f_g`h{i}j~k!l\"m#n$o%p&q'r(s)t*u+v,w/x:y;z<0=1>2?3@4 5", "")
def test_postgresql_builds_the_same_anchors_as_python(name, email):
    stored = member_search_text(display_name=name, email=email)
    with connection.cursor() as cursor:
        cursor.execute("SELECT lexeme FROM unnest(member_search_anchors(%s))", [stored])
        assert {row[0] for row in cursor.fetchall()} == anchors(stored)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=ICELANDIC + ".'_"), st.text(alphabet=ICELANDIC + ".'_"), st.data())
def test_a_typed_part_of_a_name_finds_the_member_on_postgresql(club, name, more, data):
    member = make_member(club, name=name + " " + more)
    start = data.draw(st.integers(0, len(member.display_name)))
    typed = member.display_name[start : data.draw(st.integers(start, len(member.display_name)))]
    assume(search_key(typed) and not re.fullmatch(r"[0-9a-fA-F-]{8,}", typed.strip()))  # not a Pass ID
    found = member_list(filters=MemberFilters(q=typed))
    assert found.filter(pk=member.pk).exists(), (member.search_text, search_key(typed), key_anchors(search_key(typed)))


# --- the search box on PostgreSQL ---------------------------------------------------------------------------
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


# --- SQLite (the embedded mode of `make run`): no anchors, no trigrams, the same answers -----------------------
SQLITE_SEARCH = """
import uuid
from django.core.management import call_command
from django.utils import timezone
from members.models import Member
from members.search_text import member_search_text
from members.selectors import MemberFilters, member_list
from templates_sync.models import PassTemplate

call_command("migrate", verbosity=0)
now = timezone.now()
club = PassTemplate.objects.create(
    id=uuid.uuid4(), type="MEMBER", name="Club", status="ACTIVE", raw={}, content_hash="x",
    first_seen_at=now, changed_at=now,
)
for name, email in (("Guðrún Ýr Jónsdóttir", "gudrun@simnet.is"), ("Þóra Björk", "thora@passkit.example")):
    Member.objects.create(
        template=club, display_name=name, email=email, source="manual", status="issued",
        search_text=member_search_text(display_name=name, email=email),
    )
for typed in ("gudrun yr jons", "simnet.is", "thora@", "bjork", "nobody here"):
    print(typed, "=", sorted(m.display_name for m in member_list(filters=MemberFilters(q=typed))))
"""


@pytest.mark.slow
def test_search_works_on_sqlite_without_the_postgresql_indexes(tmp_path):
    printed = run_on_sqlite(SQLITE_SEARCH, tmp_path)
    assert printed == [
        "gudrun yr jons = ['Guðrún Ýr Jónsdóttir']",
        "simnet.is = ['Guðrún Ýr Jónsdóttir']",
        "thora@ = ['Þóra Björk']",
        "bjork = ['Þóra Björk']",
        "nobody here = []",
    ]
