"""The plain-number fast path of normalise_phone must agree with phonenumbers on every number it answers.

It answers for numbers of the default region written plainly (digits in groups, optionally "+" or "00" and
the region's country code) and declines everything else to phonenumbers. Two properties:

- sound: a number the fast path takes is one phonenumbers takes, with the same E.164 form (many regions);
- complete: for a region without a national prefix (Iceland, Denmark), the fast path takes every plainly
  written number of the region that phonenumbers takes, so declining means phonenumbers refuses it.

A few hundred examples each in every run; `--hypothesis-profile thorough` (conftest.py) runs thousands.
"""

import phonenumbers
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from members.identity import InvalidIdentity, _plain_phone, _region_column, normalise_phone, plain_phone, plain_phones

EXAMPLES = max(300, settings.default.max_examples)
# Main regions of their country code, with and without a national prefix, with shared codes (+1, +44, +7),
# non-main regions of a shared code (CA, JE, KZ: the fast path declines them), and awkward metadata (BR, AR).
REGIONS = ["IS", "NO", "DK", "SE", "GB", "US", "DE", "FR", "IT", "BR", "AR", "AU", "IN", "RU", "CA", "JE", "KZ"]
NO_NATIONAL_PREFIX = ["IS", "DK"]
TYPES = ("fixed_line", "mobile", "toll_free", "premium_rate", "voip", "uan", "voicemail", "pager", "personal_number")


def phonenumbers_says(text: str, region: str) -> str | None:
    """phonenumbers alone, with normalise_phone's one rule on top: a leading 00 is the international prefix."""
    compact = "".join(ch for ch in text if ch not in " -")
    if compact.startswith("00"):
        text = "+" + compact[2:]
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _patterns(region: str) -> list[str]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    descs = [getattr(metadata, name) for name in TYPES]
    return [desc.national_number_pattern for desc in descs if desc is not None and desc.national_number_pattern]


@st.composite
def national_numbers(draw: st.DrawFn, region: str) -> str:
    """Digits that are often valid for the region (drawn from its own patterns), sometimes one digit off,
    sometimes just digits."""
    kind = draw(st.sampled_from(["pattern", "pattern", "changed", "digits"]))
    if kind == "digits":
        return draw(st.text(alphabet="0123456789", min_size=1, max_size=18))
    # phonenumbers' \d means 0-9 (it normalises digits first); hypothesis would draw any Unicode digit for it.
    pattern = draw(st.sampled_from(_patterns(region))).replace(r"\d", "[0-9]")
    digits = draw(st.from_regex(pattern, fullmatch=True))
    if kind == "changed":
        position = draw(st.integers(0, len(digits) - 1))
        change = draw(st.sampled_from(["replace", "drop", "add"]))
        digit = draw(st.sampled_from("0123456789"))
        if change == "replace":
            digits = digits[:position] + digit + digits[position + 1 :]
        elif change == "drop":
            digits = digits[:position] + digits[position + 1 :] or "0"
        else:
            digits = digits[:position] + digit + digits[position:]
    return digits


@st.composite
def spellings(draw: st.DrawFn, digits: str) -> str:
    """The digits in groups, as people write them: spaces or hyphens at random places."""
    out = []
    for position, digit in enumerate(digits):
        if position and draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from([" ", "-"])))
        out.append(digit)
    return "".join(out)


@st.composite
def plain_numbers(draw: st.DrawFn, regions: list[str]) -> tuple[str, str]:
    """(region, a number as written): national, or with +/00 and the region's code or another code."""
    region = draw(st.sampled_from(regions))
    national = draw(spellings(draw(national_numbers(region))))
    code = str(phonenumbers.country_code_for_region(region))
    prefix = draw(
        st.sampled_from(["", "", f"+{code}", f"+{code} ", f"00{code} ", f"00{code}", "+44 ", "+1", "+354 ", "+"])
    )
    return region, draw(st.sampled_from(["", " "])) + prefix + national


@pytest.mark.slow  # takes seconds
@settings(max_examples=EXAMPLES)
@given(plain_numbers(REGIONS))
def test_every_number_the_fast_path_takes_is_one_phonenumbers_takes_with_the_same_e164(case):
    region, text = case
    fast = _plain_phone(text.strip(), region)
    event(f"{region}: fast path {'took it' if fast else 'declined'}")  # --hypothesis-show-statistics
    if fast is not None:
        assert fast == phonenumbers_says(text, region), (region, text)


@settings(max_examples=EXAMPLES)
@given(st.sampled_from(REGIONS), st.text(alphabet="0123456789 +-()./#x\u00a0\uff10", max_size=24))
def test_odd_spellings_never_get_a_different_answer(region, text):
    fast = _plain_phone(text.strip(), region)
    if fast is not None:
        assert fast == phonenumbers_says(text, region), (region, text)


@settings(max_examples=EXAMPLES)
@given(plain_numbers(NO_NATIONAL_PREFIX))
def test_the_fast_path_declines_a_plain_number_of_the_region_only_when_phonenumbers_refuses_it(case):
    region, text = case
    code = str(phonenumbers.country_code_for_region(region))
    compact = text.strip().replace(" ", "").replace("-", "")
    if compact.startswith(("+", "00")) and not compact.lstrip("+").removeprefix("00").startswith(code):
        return  # another country's code: always phonenumbers' to answer
    expected = phonenumbers_says(text, region)
    event(f"{region}: {'valid' if expected else 'refused'}")
    assert _plain_phone(text.strip(), region) == expected, (region, text)


@settings(max_examples=EXAMPLES)
@given(plain_numbers(["IS"]))
def test_normalise_phone_gives_phonenumbers_answer_for_plain_numbers(case):
    _, text = case
    expected = phonenumbers_says(text, "IS")
    if expected is None:
        with pytest.raises(InvalidIdentity):
            normalise_phone(text, region="IS")
    else:
        assert normalise_phone(text, region="IS") == expected


@pytest.mark.parametrize(
    "text", ["8200001", "820 0001", "820-0001", "+3548200001", "+354 820 0001", "00354 820 0001", "5551234"]
)
def test_plainly_written_icelandic_numbers_take_the_fast_path(text):
    assert _plain_phone(text, "IS") == "+354" + text.replace(" ", "").replace("-", "")[-7:]


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("(+354) 5551234", "IS"),  # parentheses: phonenumbers' to read
        ("+44 20 7946 0000", "IS"),  # another country
        ("020 7946 0000", "GB"),  # a national prefix
        ("6505550000", "CA"),  # a region that shares its code and is not the code's main region
        ("600 5729", "IS"),  # an unassigned range: phonenumbers refuses it, with its reason
    ],
)
def test_what_the_fast_path_leaves_to_phonenumbers(text, region):
    assert _plain_phone(text, region) is None


@pytest.mark.slow  # takes seconds
@settings(max_examples=EXAMPLES)
@given(st.data())
def test_a_column_of_numbers_gets_what_each_number_gets(data):
    # plain_phones answers for a column at once: the same as plain_phone for each number, or not at all; and
    # a column whose every number plain_phone takes is answered at once (where the region's patterns allow).
    region = data.draw(st.sampled_from(REGIONS))
    values = [text.strip() for _, text in data.draw(st.lists(plain_numbers([region]), min_size=1, max_size=6))]
    one_by_one = [plain_phone(value, region) for value in values]
    column = plain_phones(values, region)
    event(f"{region}: {'answered' if column is not None else 'declined'}")
    if column is not None:
        assert column == one_by_one
    elif None not in one_by_one:
        assert _region_column(region) is None, (region, values)


def test_a_column_of_icelandic_numbers_is_answered_at_once():
    values = ["+354 820 0002", "820-0003", "00354 8200004", "5512345"]
    assert plain_phones(values, "IS") == ["+3548200002", "+3548200003", "+3548200004", "+3545512345"]
    assert plain_phones(values + ["820 000"], "IS") is None
