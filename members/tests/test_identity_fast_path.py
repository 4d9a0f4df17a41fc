"""The plain-address fast path of normalise_email must agree with email_validator on everything it takes."""

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from members import identity

_atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=20)
_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
_tld = st.sampled_from(["is", "com", "org", "test", "local", "museum", "xn", "co", "localhost", "ab"])
plain_looking = st.builds(
    lambda locals_, labels, tld: ".".join(locals_) + "@" + ".".join(labels) + "." + tld,
    st.lists(_atom, min_size=1, max_size=3),
    st.lists(_label, min_size=1, max_size=3),
    _tld,
)


@pytest.mark.slow  # takes seconds
@settings(max_examples=500)
@given(plain_looking)
def test_every_address_the_fast_path_takes_is_one_email_validator_accepts_unchanged(address):
    candidate = address.strip().lower()
    if not identity._is_plain_email(candidate):
        return
    try:
        slow = validate_email(candidate, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise AssertionError(f"fast path took {candidate!r}, email_validator refuses it: {exc}") from None
    assert slow == candidate == identity.normalise_email(address)


def test_special_use_domains_and_punycode_take_the_careful_path():
    for address in (
        "a@b.test",
        "a@host.localhost",
        "a@xn--bcher-kva.is",
        "0@00--0.is",
        "jón@example.is",
        '"a b"@example.is',
    ):
        assert not identity._is_plain_email(address.lower())


_column_value = st.one_of(
    plain_looking,
    st.sampled_from(
        ["", "a@b.test", "x@" + "a" * 250 + ".is", "a" * 65 + "@b.is", "a--b@c.is", "jón@d.is", "a\nb@c.is"]
    ),
    st.text(alphabet="ab@.-\n", max_size=12),
)


@settings(max_examples=300)
@given(st.lists(_column_value, max_size=8))
def test_a_column_of_addresses_gets_what_each_address_gets(values):
    # plain_emails answers for all the values at once, or not at all (then each goes its own way).
    column = identity.plain_emails(values)
    if column is not None:
        assert column == [identity.plain_email(value) for value in values]
        assert None not in column


def test_a_column_of_plain_addresses_is_answered_at_once():
    values = [f"Felagi{number}@Example.is" for number in range(2000)]
    assert identity.plain_emails(values) == [value.lower() for value in values]
    assert identity.plain_emails(values + ["a@b.test"]) is None
