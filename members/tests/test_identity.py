"""External ID normalisation: members/identity.py (pure Python, no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from members.identity import (
    AUTOFILL_SOURCES,
    InvalidIdentity,
    external_id_for,
    normalise_email,
    normalise_phone,
)

# Three-digit prefixes that phonenumbers treats as valid Icelandic numbers for
# every four-digit ending (fixed lines 4xx/5xx, mobiles 6xx/7xx/8xx).
ICELANDIC_PREFIXES = ("410", "420", "510", "550", "555", "562", "611", "690", "699", "770", "820", "840", "860", "899")


@st.composite
def icelandic_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A valid Icelandic number in one of the spellings people use, and its E.164 form."""
    prefix = draw(st.sampled_from(ICELANDIC_PREFIXES))
    rest = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    digits = prefix + rest
    spelling = draw(
        st.sampled_from(
            (
                "{d}",
                "{p} {r}",
                "{p}-{r}",
                " {p} {r} ",
                "+354{d}",
                "+354 {p} {r}",
                "+354 {p}-{r}",
                "00354{d}",
                "00354 {p} {r}",
                "(+354) {d}",
                "(+354) {p}-{r}",
            )
        )
    )
    return spelling.format(d=digits, p=prefix, r=rest), "+354" + digits


def test_an_email_address_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("Laura.Loopy@Example.COM ") == "laura.loopy@example.com"


def test_an_icelandic_email_address_keeps_its_letters_in_lower_case() -> None:
    assert normalise_email(" JÓN@Dæmi.IS") == "jón@dæmi.is"


def test_composed_and_decomposed_accents_give_the_same_email_address() -> None:
    assert normalise_email("jo\u0301n@example.com") == normalise_email("j\u00f3n@example.com")


@pytest.mark.parametrize("spelling", ["555 1234", "+354 555-1234", "003545551234", "(+354) 5551234"])
def test_icelandic_phone_spellings_become_one_e164_number(spelling: str) -> None:
    assert normalise_phone(spelling) == "+3545551234"


def test_a_foreign_number_keeps_its_country_code() -> None:
    assert normalise_phone("+44 20 7946 0000") == "+442079460000"


def test_the_00_international_prefix_works_whatever_the_default_region() -> None:
    assert normalise_phone("00354 555 1234", region="US") == "+3545551234"


def test_a_number_without_country_code_is_read_in_the_given_region() -> None:
    assert normalise_phone("(650) 253-0000", region="US") == "+16502530000"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x@", "There must be something after the @-sign."),
        ("laura", "must have an @-sign"),
        ("laura@localhost", "It should have a period."),
        ("a b@example.com", "invalid characters"),
        ("", "empty"),
        ("   ", "empty"),
        ("a" * 300 + "@example.com", "longer than 254 characters"),
    ],
)
def test_an_invalid_email_address_is_refused_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalise_email(value)
    assert reason in str(caught.value)


def test_an_invalid_email_message_quotes_the_value() -> None:
    with pytest.raises(InvalidIdentity, match=r"^“x@” is not a valid email address\."):
        normalise_email("x@")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1234", "not a valid phone number"),
        ("555 ABCD", "contains letters"),
        ("555 1234 ext 5", "contains letters"),
        ("+999 555 1234", "country code is unknown"),
        ("+", "not a valid phone number"),
        ("00", "not a valid phone number"),
        ("", "empty"),
        ("5" * 300, "too long"),
        ("٥٥٥١٢٣٤٥٥٥٥٥٥٥", "not a valid phone number"),
    ],
)
def test_an_invalid_phone_number_is_refused_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalise_phone(value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("junk", [None, 5551234, b"555 1234", ["x@example.com"], object()])
def test_values_that_are_not_text_are_refused_as_invalid_identities(junk: object) -> None:
    with pytest.raises(InvalidIdentity):
        normalise_email(junk)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdentity):
        normalise_phone(junk)  # type: ignore[arg-type]


def test_a_very_long_bad_value_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalise_email("x" * 100_000)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("value", "region", "message"),
    [
        ("600 5729", "IS", "“600 5729” is not a valid phone number. It is not an assigned Icelandic number."),
        ("+354 600 5729", "IS", "“+354 600 5729” is not a valid phone number. It is not an assigned Icelandic number."),
        ("12", "IS", "“12” is not a valid phone number. Icelandic numbers have 7 or 9 digits."),
        (
            "12345678",
            "IS",
            "“12345678” is not a valid phone number. Icelandic numbers have 7 or 9 digits. "
            "Write a number from abroad with its country code, starting with + or 00.",
        ),
        ("+354 12345678", "IS", "“+354 12345678” is not a valid phone number. Icelandic numbers have 7 or 9 digits."),
        ("00447700900123", "IS", "“00447700900123” is not a valid phone number. It is not an assigned +44 number."),
        ("+44 12", "IS", "“+44 12” is not a valid phone number. +44 numbers have 7, 9 or 10 digits."),
        ("555 0123", "US", "“555 0123” is not a valid phone number. +1 numbers have 10 digits."),
        ("600 5729", "DK", "“600 5729” is not a valid phone number. Danish numbers have 8 digits."),
    ],
)
def test_a_number_phonenumbers_refuses_is_explained_in_terms_of_its_countrys_numbers(value, region, message) -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalise_phone(value, region=region)
    assert str(caught.value) == message
    assert "e.g. +44" not in str(caught.value)


def test_control_characters_do_not_reach_the_message() -> None:
    with pytest.raises(InvalidIdentity) as caught:
        normalise_phone("555\n\x001234\r")
    assert "\n" not in str(caught.value) and "\x00" not in str(caught.value)


@given(st.emails())
def test_normalising_an_email_address_twice_changes_nothing(address: str) -> None:
    once = normalise_email(address)
    assert normalise_email(once) == once


@given(st.emails(), st.sampled_from(["", " ", "\t", "  "]), st.sampled_from(["", " ", "\n"]))
def test_case_and_surrounding_space_do_not_change_an_email_address(address: str, before: str, after: str) -> None:
    assert normalise_email(before + address.upper() + after) == normalise_email(address)


@given(icelandic_numbers())
def test_every_spelling_of_an_icelandic_number_gives_its_e164_form(case: tuple[str, str]) -> None:
    spelling, e164 = case
    assert normalise_phone(spelling) == e164


@given(icelandic_numbers())
def test_normalising_a_phone_number_twice_changes_nothing(case: tuple[str, str]) -> None:
    once = normalise_phone(case[0])
    assert normalise_phone(once) == once


@given(st.text(max_size=400))
def test_any_text_gives_an_email_address_or_invalid_identity(value: str) -> None:
    try:
        once = normalise_email(value)
    except InvalidIdentity as exc:
        assert str(exc)
    else:
        assert normalise_email(once) == once


@given(st.text(max_size=300) | st.from_regex(r"[+(]?[0-9 ()+-]{0,20}", fullmatch=True))
def test_any_text_gives_a_phone_number_or_invalid_identity(value: str) -> None:
    try:
        once = normalise_phone(value)
    except InvalidIdentity as exc:
        assert str(exc)
    else:
        assert once.startswith("+") and once[1:].isdigit()
        assert normalise_phone(once) == once


def test_autofill_sources_are_off_email_and_phone() -> None:
    assert AUTOFILL_SOURCES == ("off", "email", "phone")


@pytest.mark.parametrize("value", ["laura@example.com", "555 1234", "", None])
def test_autofill_off_gives_no_external_id(value: str | None) -> None:
    assert external_id_for("off", value) is None


@pytest.mark.parametrize("source", ["email", "phone"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_empty_value_gives_no_external_id(source: str, value: str | None) -> None:
    assert external_id_for(source, value) is None


def test_email_autofill_gives_the_normalised_address() -> None:
    assert external_id_for("email", " Laura.Loopy@Example.COM") == "laura.loopy@example.com"


def test_phone_autofill_gives_the_e164_number() -> None:
    assert external_id_for("phone", "555-1234") == "+3545551234"
    assert external_id_for("phone", "(650) 253-0000", region="US") == "+16502530000"


def test_an_invalid_autofill_value_is_refused_rather_than_ignored() -> None:
    with pytest.raises(InvalidIdentity):
        external_id_for("email", "not an address")
    with pytest.raises(InvalidIdentity):
        external_id_for("phone", "12")


def test_an_unknown_autofill_source_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="Unknown autofill source"):
        external_id_for("fax", "555 1234")
