"""Field validation: members/validation.py (pure Python, no database)."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.is_ import kennitala as stdnum_kennitala

from members.validation import (
    FORMATS,
    MAX_LENGTH,
    FieldResult,
    FieldSpec,
    TemplateRules,
    validate_field,
    validate_values,
)

TODAY = date(2026, 3, 1)


def spec(fmt: str, *, label: str = "Field", mandatory: bool = False, type: str = "ISSUER") -> FieldSpec:
    return FieldSpec(identifier=fmt.lower(), label=label, format=fmt, is_mandatory=mandatory, type=type)


NO_RULES = TemplateRules()


def check(fmt: str, raw: str | None, *, rules: TemplateRules = NO_RULES, label: str = "Field") -> FieldResult:
    return validate_field(spec(fmt, label=label), raw, rules=rules, today=TODAY)


def kennitala(born: date, *, company: bool = False, serial: str = "29") -> str:
    """A kennitala for ``born`` whose mod-11 check digit is right."""
    day = born.day + (40 if company else 0)
    century = {1800: "8", 1900: "9", 2000: "0"}[born.year // 100 * 100]
    for serial_try in (serial, *(f"{n:02d}" for n in range(20, 100))):
        head = f"{day:02d}{born.month:02d}{born.year % 100:02d}{serial_try}"
        for check_digit in "0123456789":
            number = head + check_digit + century
            if stdnum_kennitala.checksum(number) == 0:
                return number
    raise AssertionError("no serial gives a valid check digit")


def with_wrong_check_digit(number: str) -> str:
    wrong = str((int(number[8]) + 1) % 10)
    return number[:8] + wrong + number[9]


# --- empty values -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("raw", [None, "", "   ", "\t\n"])
def test_an_empty_optional_value_is_fine_in_every_format(fmt: str, raw: str | None) -> None:
    assert check(fmt, raw) == FieldResult(value="")


def test_an_empty_mandatory_value_is_required() -> None:
    result = validate_field(spec("TEXT", label="Name", mandatory=True), "  ")
    assert result == FieldResult(value="", error="Name is required.")


def test_a_field_without_label_is_named_by_its_identifier() -> None:
    result = validate_field(FieldSpec("nafn", "", "TEXT", is_mandatory=True), None)
    assert result.error == "nafn is required."


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_longer_than_the_limit_is_refused_in_every_format(fmt: str) -> None:
    result = check(fmt, "1" * (MAX_LENGTH + 1))
    assert result.error.startswith("Field: the value is too long")


# --- TEXT ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("  Laura Loopy ", "Laura Loopy"),
        ("Jón Þór Ægisson", "Jón Þór Ægisson"),
        ("a\tb", "a\tb"),
        ("x" * MAX_LENGTH, "x" * MAX_LENGTH),
    ],
)
def test_text_is_trimmed_and_otherwise_kept(raw: str, value: str) -> None:
    assert check("TEXT", raw) == FieldResult(value=value)


def test_text_with_a_nul_character_is_refused() -> None:
    assert "NUL" in check("TEXT", "a\x00b").error


# --- NUMBER ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("42", "42"),
        (" 007 ", "7"),
        ("0", "0"),
        ("000", "0"),
        ("-5", "-5"),
        ("+5", "5"),
        ("-0", "0"),
        ("-007", "-7"),
        ("1" * 40, "1" * 40),
    ],
)
def test_an_integer_is_accepted_without_leading_zeros(raw: str, value: str) -> None:
    assert check("NUMBER", raw) == FieldResult(value=value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("1.000", "without thousands separators"),
        ("1,000,000", "without thousands separators"),
        ("1,5", "Decimals are not allowed"),
        ("3.14", "Decimals are not allowed"),
        ("1 000", "Remove the spaces"),
        ("abc", "is not a whole number"),
        ("1e3", "is not a whole number"),
        ("--1", "is not a whole number"),
        ("٤٢", "is not a whole number"),
    ],
)
def test_a_number_that_is_not_a_plain_integer_is_refused_with_the_reason(raw: str, reason: str) -> None:
    result = check("NUMBER", raw, label="Points")
    assert result.error.startswith(f"Points: “{raw}” is not a whole number.")
    assert reason in result.error


# --- DATE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("2024-02-29", "2024-02-29"),
        ("29.02.2024", "2024-02-29"),
        ("1.3.2024", "2024-03-01"),
        ("01.12.1999", "1999-12-01"),
        (" 2026-03-01 ", "2026-03-01"),
    ],
)
def test_an_iso_or_icelandic_date_is_stored_as_iso(raw: str, value: str) -> None:
    assert check("DATE", raw) == FieldResult(value=value)


@pytest.mark.parametrize("raw", ["2023-02-29", "31.04.2024", "0000-01-01", "2024-13-01", "00.01.2024"])
def test_a_date_that_does_not_exist_is_refused(raw: str) -> None:
    assert check("DATE", raw).error == f"Field: “{raw}” is not a real date."


@pytest.mark.parametrize("raw", ["2024/01/01", "01-02-2024", "1.3.24", "24-1-5", "tomorrow", "2024-1-5"])
def test_a_date_in_another_format_is_refused_with_the_formats_to_use(raw: str) -> None:
    assert check("DATE", raw).error == f"Field: “{raw}” is not a date. Use yyyy-mm-dd or dd.mm.yyyy."


# --- EMAIL -----------------------------------------------------------------------


def test_an_email_address_is_normalised() -> None:
    assert check("EMAIL", " Laura.Loopy@Example.COM ") == FieldResult(value="laura.loopy@example.com")


def test_an_invalid_email_address_names_the_field() -> None:
    result = check("EMAIL", "x@", label="Email")
    assert result.error.startswith("Email: “x@” is not a valid email address.")


def test_any_domain_is_allowed_when_the_template_lists_none() -> None:
    assert check("EMAIL", "a@anywhere.com", rules=TemplateRules()).error == ""


def test_an_address_at_an_allowed_domain_is_accepted_whatever_its_case() -> None:
    rules = TemplateRules(allowed_email_domains=("Skoli.IS", "example.com"))
    assert check("EMAIL", "Nemandi@SKOLI.is", rules=rules) == FieldResult(value="nemandi@skoli.is")


def test_an_address_at_another_domain_is_refused_naming_the_allowed_ones() -> None:
    rules = TemplateRules(allowed_email_domains=("skoli.is", "example.com"))
    result = check("EMAIL", "a@gmail.com", rules=rules, label="Email")
    assert result.error == "Email: “a@gmail.com” is not allowed. Use an address at skoli.is or example.com."


@pytest.mark.parametrize("address", ["a@mail.skoli.is", "a@skoli.is.evil.com", "a@notskoli.is"])
def test_an_allowed_domain_must_match_exactly(address: str) -> None:
    rules = TemplateRules(allowed_email_domains=("skoli.is",))
    assert "is not allowed" in check("EMAIL", address, rules=rules).error


# --- URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "https://smartpages.is",
        "http://example.com/a/b?c=d#e",
        "HTTPS://Example.com/Path",
        "https://[::1]:8443/",
        "http://localhost:8000",
    ],
)
def test_an_http_or_https_url_with_a_host_is_accepted_as_typed(raw: str) -> None:
    assert check("URL", f" {raw} ") == FieldResult(value=raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("www.example.com", "must start with http:// or https://"),
        ("ftp://example.com", "must start with http:// or https://"),
        ("javascript:alert(1)", "must start with http:// or https://"),
        ("http://", "has no host name"),
        ("https:///path", "has no host name"),
        ("http://exa mple.com", "characters a URL cannot have"),
        ('http://example.com/"x"', "characters a URL cannot have"),
        ("http://[::1", "is not a valid web address"),
        ("http://example.com:99999", "is not a valid web address"),
    ],
)
def test_a_url_that_is_not_a_web_address_is_refused(raw: str, reason: str) -> None:
    result = check("URL", raw, label="Website")
    assert result.error.startswith(f"Website: “{raw}” is not a valid web address.")
    assert reason in result.error


# --- KENNITALA -------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["010130-2989", "0101302989", "010130 2989", " 010130-2989 "])
def test_a_kennitala_is_stored_as_ten_digits(raw: str) -> None:
    assert check("KENNITALA", raw) == FieldResult(value="0101302989")


def test_a_company_kennitala_is_accepted() -> None:
    assert check("KENNITALA", "450401-3150") == FieldResult(value="4504013150")


@pytest.mark.parametrize(("century", "year"), [("8", 1899), ("9", 1999), ("0", 2001)])
def test_the_last_digit_gives_the_century(century: str, year: int) -> None:
    number = kennitala(date(year, 6, 15))
    assert number[9] == century
    assert check("KENNITALA", number) == FieldResult(value=number)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("010130-298", "A kennitala has 10 digits"),
        ("01013029890", "A kennitala has 10 digits"),
        ("010130--2989", "A kennitala has 10 digits"),
        ("O10130-2989", "A kennitala has 10 digits"),
        ("0101302985", "Its last digit must be 8, 9 or 0"),
        ("3201743399", "Its first six digits are not a real date"),
        ("3002002989", "Its first six digits are not a real date"),
        ("0113302989", "Its first six digits are not a real date"),
        ("7201743399", "Its first six digits are not a real date"),
        ("0101992980", "Its date is in the future"),
    ],
)
def test_a_kennitala_with_a_wrong_shape_or_date_is_an_error(raw: str, reason: str) -> None:
    result = check("KENNITALA", raw, label="Kennitala")
    assert result.error.startswith(f"Kennitala: “{raw}” ")
    assert reason in result.error


def test_a_failed_check_digit_is_a_warning_not_an_error() -> None:
    number = with_wrong_check_digit("0101302989")
    assert stdnum_kennitala.checksum(number) != 0
    result = check("KENNITALA", number, label="Kennitala")
    assert result.value == number
    assert result.error == ""
    assert result.warning.startswith(f"Kennitala: the check digit of “{number}” does not match.")


def test_a_good_check_digit_gives_no_warning() -> None:
    assert check("KENNITALA", "0101302989").warning == ""


def test_a_holder_of_the_minimum_age_is_accepted() -> None:
    rules = TemplateRules(kennitala_min_age=18)
    number = kennitala(date(2008, 3, 1))  # 18 today
    assert check("KENNITALA", number, rules=rules) == FieldResult(value=number)


def test_a_holder_one_day_short_of_the_minimum_age_is_refused() -> None:
    rules = TemplateRules(kennitala_min_age=18)
    number = kennitala(date(2008, 3, 2))  # 18 tomorrow
    result = check("KENNITALA", number, rules=rules, label="Kennitala")
    assert result.error == "Kennitala: the holder must be at least 18 years old."


def test_a_29_february_birthday_counts_on_1_march() -> None:
    rules = TemplateRules(kennitala_min_age=18)
    number = kennitala(date(2008, 2, 29))
    assert validate_field(spec("KENNITALA"), number, rules=rules, today=date(2026, 3, 1)).error == ""
    assert validate_field(spec("KENNITALA"), number, rules=rules, today=date(2026, 2, 28)).error != ""


def test_a_company_kennitala_is_refused_when_a_minimum_age_is_set() -> None:
    rules = TemplateRules(kennitala_min_age=18)
    result = check("KENNITALA", "4504013150", rules=rules, label="Kennitala")
    assert result.error == "Kennitala: “4504013150” must be a person's kennitala, not a company's."


def test_the_age_check_still_warns_about_a_failed_check_digit() -> None:
    rules = TemplateRules(kennitala_min_age=18)
    number = with_wrong_check_digit(kennitala(date(1990, 5, 17)))
    result = check("KENNITALA", number, rules=rules)
    assert result.error == "" and result.warning != ""


def test_a_minimum_age_of_zero_means_no_age_check() -> None:
    assert check("KENNITALA", "4504013150", rules=TemplateRules(kennitala_min_age=0)).error == ""


# --- PHONE_NUMBER ----------------------------------------------------------------


@pytest.mark.parametrize("raw", ["555 1234", "+354 555-1234", "003545551234", "(+354) 5551234"])
def test_a_phone_number_is_stored_in_e164(raw: str) -> None:
    assert check("PHONE_NUMBER", raw) == FieldResult(value="+3545551234")


def test_a_phone_number_uses_the_given_default_region() -> None:
    result = validate_field(spec("PHONE_NUMBER"), "(650) 253-0000", region="US")
    assert result == FieldResult(value="+16502530000")


@pytest.mark.parametrize("raw", ["1234", "555 ABCD", "+999 555 1234"])
def test_an_invalid_phone_number_names_the_field(raw: str) -> None:
    result = check("PHONE_NUMBER", raw, label="Mobile")
    assert result.error.startswith(f"Mobile: “{raw}” is ")


# --- any input -------------------------------------------------------------------


@given(
    st.sampled_from(FORMATS),
    st.one_of(st.none(), st.text(max_size=200), st.text(alphabet="0123456789 -.+,/:@", max_size=20)),
    st.booleans(),
)
def test_any_input_gives_a_result_and_never_an_exception(fmt: str, raw: str | None, mandatory: bool) -> None:
    rules = TemplateRules(allowed_email_domains=("example.com",), kennitala_min_age=18)
    result = validate_field(spec(fmt, mandatory=mandatory), raw, rules=rules, today=TODAY)
    assert isinstance(result.value, str) and isinstance(result.error, str) and isinstance(result.warning, str)
    if result.error:
        assert result.error.startswith("Field")
    else:
        # A clean value is already normalised: validating it again keeps it.
        assert validate_field(spec(fmt), result.value, rules=rules, today=TODAY).value == result.value


def test_an_unknown_format_is_treated_as_text() -> None:
    assert check("COLOUR", " blue ") == FieldResult(value="blue")


# --- validate_values -------------------------------------------------------------

SPECS = (
    FieldSpec("name", "Name", "TEXT", is_mandatory=True, type="ISSUER"),
    FieldSpec("email", "Email", "EMAIL", is_mandatory=True, type="MEMBER"),
    FieldSpec("kt", "Kennitala", "KENNITALA", is_mandatory=False, type="MEMBER"),
    FieldSpec("points", "Points", "NUMBER", is_mandatory=False, type="ISSUER"),
)


def test_validate_values_returns_clean_values_errors_and_warnings_by_identifier() -> None:
    clean, errors, warnings = validate_values(
        SPECS,
        {"name": " Laura ", "email": "Laura@Example.com", "kt": "0101302979", "points": "1.000"},
        today=TODAY,
    )
    assert clean == {"name": "Laura", "email": "laura@example.com", "kt": "0101302979"}
    assert errors == {
        "points": "Points: “1.000” is not a whole number. Write it without thousands separators, e.g. 1000."
    }
    assert set(warnings) == {"kt"}


def test_every_empty_mandatory_field_is_required_by_default() -> None:
    clean, errors, warnings = validate_values(SPECS, {}, today=TODAY)
    assert errors == {"name": "Name is required.", "email": "Email is required."}
    assert clean == {"kt": "", "points": ""}
    assert warnings == {}


def test_require_types_limits_which_mandatory_fields_are_required() -> None:
    # An issuer's CSV may leave MEMBER fields for the holder to fill in on the claim form.
    clean, errors, _ = validate_values(SPECS, {}, require_types={"ISSUER"}, today=TODAY)
    assert errors == {"name": "Name is required."}
    assert clean["email"] == ""

    _, errors, _ = validate_values(SPECS, {"name": "Laura"}, require_types={"MEMBER"}, today=TODAY)
    assert errors == {"email": "Email is required."}

    _, errors, _ = validate_values(SPECS, {}, require_types=set(), today=TODAY)
    assert errors == {}


def test_a_field_that_is_not_required_is_still_validated_when_given() -> None:
    _, errors, _ = validate_values(SPECS, {"name": "Laura", "email": "x@"}, require_types={"ISSUER"}, today=TODAY)
    assert set(errors) == {"email"}


def test_values_for_unknown_identifiers_are_ignored() -> None:
    clean, errors, warnings = validate_values(
        SPECS, {"name": "Laura", "email": "a@example.com", "smartpass_link": "x", "extra": "\x00"}, today=TODAY
    )
    assert set(clean) == {"name", "email", "kt", "points"}
    assert "extra" not in errors and "smartpass_link" not in clean


def test_validate_values_applies_template_rules_and_region() -> None:
    specs = (FieldSpec("email", "Email", "EMAIL"), FieldSpec("phone", "Phone", "PHONE_NUMBER"))
    clean, errors, _ = validate_values(
        specs,
        {"email": "a@gmail.com", "phone": "(650) 253-0000"},
        rules=TemplateRules(allowed_email_domains=("skoli.is",)),
        region="US",
    )
    assert clean == {"phone": "+16502530000"}
    assert errors["email"].endswith("Use an address at skoli.is.")
