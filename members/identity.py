"""External ID normalisation for members.

A template with autofill on derives a member's External ID from the holder's
email address or phone number. The External ID is unique per template, so two
spellings of the same address or number must give the same string, and
normalising an already normalised value must change nothing.

Pure Python on purpose (no Django): the CSV task, the forms and the claim flow
all call this, and it is tested without settings or a database.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

__all__ = [
    "AUTOFILL_SOURCES",
    "InvalidIdentity",
    "display_value",
    "external_id_for",
    "normalise_email",
    "normalise_phone",
    "or_list",
    "plain_email",
    "plain_emails",
    "plain_phone",
    "plain_phones",
]

AUTOFILL_SOURCES: tuple[str, ...] = ("off", "email", "phone")

# RFC 5321 caps a forward path at 254 characters; checking length first keeps
# pathological input (megabyte CSV cells) away from the parsers.
_MAX_EMAIL_LENGTH = 254
# phonenumbers refuses more than 250 characters itself; keep the same bound.
_MAX_PHONE_LENGTH = 250
# How much of a bad value to repeat back in a message.
_DISPLAY_LENGTH = 60


# Plain ASCII addresses (dot-atom local part, letter-digit-hyphen labels, an alphabetic TLD) are what a
# campaign file holds almost every time. email_validator accepts each of them unchanged, but costs about
# 25 µs a call, most of a CSV row's work; this pattern answers in about one. Anything else — quoted local
# parts, Unicode, labels with "--" (punycode and reserved ones), special-use TLDs — goes through email_validator.
_PLAIN_EMAIL = re.compile(
    r"(?P<local>[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?P<tld>[a-z]{2,63}))"
)
_SPECIAL_USE_TLDS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _is_plain_email(candidate: str) -> bool:
    match = _PLAIN_EMAIL.fullmatch(candidate)
    return bool(
        match
        and len(match["local"]) <= 64
        and len(match["domain"]) <= 253
        and match["tld"] not in _SPECIAL_USE_TLDS
        # "xn--" punycode and other labels with "--" in places 3-4 are reserved: email_validator decides.
        and "--" not in match["domain"]
    )


class InvalidIdentity(ValueError):
    """An email address or phone number that cannot become an External ID.

    The message is a short sentence a person understands; the forms and the CSV
    error column show it as it is.
    """


def display_value(value: object) -> str:
    """Quote a user-supplied value for an error message: “value”.

    Long values are cut and control characters replaced, so one bad CSV cell
    cannot blow up or garble the error column.
    """
    text = value if isinstance(value, str) else repr(value)
    text = "".join(
        "\N{REPLACEMENT CHARACTER}" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
        for ch in text[: _DISPLAY_LENGTH + 1]
    )
    if len(text) > _DISPLAY_LENGTH:
        text = text[: _DISPLAY_LENGTH - 1] + "…"
    return f"“{text}”"


# _is_plain_email for a whole column of stripped, lower-cased addresses joined by "\n", in one match: the
# local part's and the domain's lengths as lookaheads, special-use TLDs refused where the TLD starts. ("--"
# anywhere sends the column to the address-by-address check, which allows it in the local part.)
_PLAIN_EMAIL_LINE = (
    r"(?=[^@\n]{1,64}@)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?=[^\n]{1,253}(?:\n|\Z))(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?!(?:" + "|".join(sorted(tld for tld in _SPECIAL_USE_TLDS if re.fullmatch("[a-z]{2,63}", tld))) + r")(?:\n|\Z))"
    r"[a-z]{2,63}"
)
_PLAIN_EMAIL_COLUMN = re.compile(rf"(?:{_PLAIN_EMAIL_LINE}\n)*+{_PLAIN_EMAIL_LINE}")


def plain_emails(values: list[str]) -> list[str] | None:
    """plain_email for every value of a column (already stripped), or None when one of them needs a closer
    look: a million-row file's addresses in one regular-expression match per few thousand."""
    if not values:
        return []
    joined = "\n".join(values).lower()
    if joined.count("\n") != len(values) - 1 or "--" in joined or not _PLAIN_EMAIL_COLUMN.fullmatch(joined):
        return None
    return joined.split("\n")


def plain_email(value: str, region: str = "") -> str | None:
    """normalise_email's answer for a plainly written address (its fast path, taken the same way); None when
    it takes a closer look. `region` is unused: the signature is plain_phone's, so callers hold either."""
    candidate = value.strip().lower()
    return candidate if _is_plain_email(candidate) else None


def normalise_email(value: str) -> str:
    """Trim and lower-case an email address after checking its syntax.

    The whole address is lower-cased (not just the domain): in practice mail
    providers treat the local part case-insensitively, and holders type it
    both ways, which would otherwise make two members for one person.
    No DNS lookup: this runs for every CSV row and must work offline.
    """
    if not isinstance(value, str):
        raise InvalidIdentity(f"{display_value(value)} is not a valid email address.")
    candidate = value.strip().lower()
    if _is_plain_email(candidate):
        return candidate
    shown = display_value(value.strip())
    if not candidate:
        raise InvalidIdentity("The email address is empty.")
    if len(candidate) > _MAX_EMAIL_LENGTH:
        raise InvalidIdentity(
            f"{shown} is not a valid email address. It is longer than {_MAX_EMAIL_LENGTH} characters."
        )
    try:
        info = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidIdentity(f"{shown} is not a valid email address. {_email_reason(exc)}") from None
    except (UnicodeError, ValueError):
        # Defensive: the IDNA layer has raised bare codec errors in the past.
        raise InvalidIdentity(f"{shown} is not a valid email address.") from None
    # email_validator returns the Unicode-normalised (NFC) form, so composed
    # and decomposed spellings of "jón@" meet; lower-case again because the
    # normalisation may reintroduce capitals for a few compatibility characters.
    normalised = info.normalized.lower()
    if normalised != candidate:
        # Guarantee idempotency: the result itself must survive this function
        # unchanged, or the unique constraint could be dodged by re-normalising.
        try:
            again = validate_email(normalised, check_deliverability=False).normalized.lower()
        except (EmailNotValidError, UnicodeError, ValueError):
            again = None
        if again != normalised:
            raise InvalidIdentity(
                f"{shown} is not a valid email address. It contains characters that cannot be written consistently."
            )
    return normalised


def _email_reason(exc: EmailNotValidError) -> str:
    """email_validator's explanation without its redundant lead-in."""
    reason = str(exc).strip()
    lead_in = "The email address is not valid. "
    if reason.startswith(lead_in):
        reason = reason[len(lead_in) :]
    return reason


def plain_phone(value: str, region: str = "IS") -> str | None:
    """normalise_phone's answer for a plainly written valid number of ``region`` (its fast path, taken the
    same way); None when it asks phonenumbers."""
    candidate = value.strip()
    if not candidate or len(candidate) > _MAX_PHONE_LENGTH:
        return None
    return _plain_phone(candidate, region)


def normalise_phone(value: str, *, region: str = "IS") -> str:
    """Return the number in E.164 (+3545551234).

    Numbers without a country code are read as numbers of ``region``. A leading
    ``00`` is taken as the international prefix whatever the region, because
    that is how Icelanders (and most of Europe) write foreign numbers, and
    phonenumbers only knows it for regions whose dialling prefix is 00.
    """
    if not isinstance(value, str):
        raise InvalidIdentity(f"{display_value(value)} is not a valid phone number.")
    candidate = value.strip()
    if not candidate:
        raise InvalidIdentity("The phone number is empty.")
    if len(candidate) > _MAX_PHONE_LENGTH:
        raise InvalidIdentity(f"{display_value(candidate)} is too long to be a phone number.")
    plain = _plain_phone(candidate, region)
    if plain is not None:
        return plain
    # phonenumbers would turn letters into digits (vanity numbers, 555-ABCD);
    # for an identity key a letter is far more likely a typo, so refuse it.
    # "ext"/"x" extensions are refused too: E.164 has no place for them.
    if any(ch.isalpha() for ch in candidate):
        raise InvalidIdentity(f"{display_value(candidate)} is not a valid phone number. It contains letters.")
    compact = "".join(ch for ch in candidate if ch not in " \t-./()\u00a0")
    if compact.startswith("00"):
        candidate = "+" + compact[2:]
    try:
        number = phonenumbers.parse(candidate, region, keep_raw_input=True)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity(_phone_parse_message(value.strip(), exc)) from None
    except Exception:  # noqa: BLE001 - the contract is "InvalidIdentity or a value", never a crash
        raise InvalidIdentity(f"{display_value(value.strip())} is not a valid phone number.") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentity(_phone_invalid_message(value.strip(), number, region))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_parse_message(original: str, exc: phonenumbers.NumberParseException) -> str:
    shown = display_value(original)
    error_type = exc.error_type
    if error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
        return f"{shown} is not a valid phone number. Its country code is unknown."
    if error_type in (
        phonenumbers.NumberParseException.TOO_SHORT_NSN,
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD,
    ):
        return f"{shown} is too short to be a phone number."
    if error_type == phonenumbers.NumberParseException.TOO_LONG:
        return f"{shown} is too long to be a phone number."
    return f"{shown} is not a valid phone number."


# --- the fast path for phone numbers ---------------------------------------------------------------------------
# phonenumbers.parse + is_valid_number cost ~22 µs a number, most of a CSV row's work. Nearly every number in a
# campaign file is written the plain way: digits in groups, the region's own number or "+"/"00" with its
# country code. For those, validity is a few regular expressions taken from phonenumbers' own metadata for
# the region (so it stays true when phonenumbers updates); anything else — other countries, other
# punctuation, numbers that do not match — goes the careful way. Property-tested against phonenumbers in
# members/tests/test_identity_phone_fast_path.py.
_PLAIN_PHONE = re.compile(r"\+?[0-9]+(?:[ -][0-9]+)*")
_PLAIN_PHONE_COLUMN = re.compile(r"(?:\+?[0-9]+(?:[ -][0-9]+)*\n)*+\+?[0-9]+(?:[ -][0-9]+)*")
# The kinds of number phonenumbers' is_valid_number accepts (PhoneNumberType other than UNKNOWN).
_NUMBER_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)


@dataclass(frozen=True)
class _RegionNumbers:
    """What the fast path needs of one region's phonenumbers metadata, read once."""

    country_code: str
    # national significant number length → one pattern: the region's general pattern and any valid type's
    valid: dict[int, re.Pattern[str]]
    # Digits phonenumbers would strip or read differently: a national prefix (the UK's "0") and, for a
    # number written without a country code, the region's international dialling prefix (the US's "011").
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None


@functools.cache
def _region_numbers(region: str) -> _RegionNumbers | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if metadata is None or not metadata.general_desc.national_number_pattern:
        return None
    # Regions that share a country code (+1, +44, +7) are told apart by phonenumbers from the digits: the
    # fast path speaks only for the code's main region, whose patterns phonenumbers tries first.
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code, ())
    if not regions or regions[0] != region or metadata.leading_digits:
        return None
    general = metadata.general_desc
    valid = {}
    for length in general.possible_length:
        kinds = [
            f"(?:{desc.national_number_pattern})"
            for desc in (getattr(metadata, name) for name in _NUMBER_TYPES)
            if desc is not None
            and desc.national_number_pattern
            and (not desc.possible_length or length in desc.possible_length)
        ]
        if kinds:
            valid[length] = re.compile(rf"(?=(?:{general.national_number_pattern})\Z)(?:{'|'.join(kinds)})\Z")
    national_prefix = metadata.national_prefix_for_parsing
    international_prefix = metadata.international_prefix
    return _RegionNumbers(
        country_code=str(metadata.country_code),
        valid=valid,
        national_prefix=re.compile(national_prefix) if national_prefix else None,
        international_prefix=re.compile(international_prefix) if international_prefix else None,
    )


@functools.cache
def _region_column(region: str) -> re.Pattern[str] | None:
    """_plain_phone's test for a whole column of numbers of ``region`` without their spaces and hyphens,
    joined by "\n": each line the country code ("+" or "00") or neither, then a national number that neither
    prefix takes and that the pattern for its length matches — the per-number steps as one expression. None
    where a metadata pattern is anchored (it would mean another thing on a line of a column)."""
    numbers = _region_numbers(region)
    if numbers is None:
        return None
    parts = [pattern.pattern for pattern in numbers.valid.values()]
    prefixes = [prefix.pattern for prefix in (numbers.national_prefix, numbers.international_prefix) if prefix]
    anchors = ("^", "$", "\\A", "\\b", "\\B", "(?P", "\\1", "\\2")
    if any(anchor in part for part in parts + prefixes for anchor in anchors):
        return None
    if any(part.count("\\Z") != 2 or not part.endswith("\\Z") for part in parts):
        return None
    end = r"(?=\n|\Z)"
    national = "|".join(
        rf"(?=[0-9]{{{length}}}{end})" + pattern.pattern.replace("\\Z", end)
        for length, pattern in numbers.valid.items()
    )
    code = numbers.country_code
    local = r"(?!00)" + (f"(?!(?:{numbers.international_prefix.pattern}))" if numbers.international_prefix else "")
    no_national_prefix = f"(?!(?:{numbers.national_prefix.pattern}))" if numbers.national_prefix else ""
    line = rf"(?:\+{code}|00{code}|{local}){no_national_prefix}(?:{national})"
    return re.compile(rf"(?:{line}\n)*+{line}")


def plain_phones(values: list[str], region: str = "IS") -> list[str] | None:
    """plain_phone for every value of a column (already stripped), or None when one of them needs a closer
    look: a million-row file's numbers in two regular-expression matches per few thousand."""
    if not values:
        return []
    column = _region_column(region)
    joined = "\n".join(values)
    if column is None or joined.count("\n") != len(values) - 1 or not _PLAIN_PHONE_COLUMN.fullmatch(joined):
        return None
    compact = joined.replace(" ", "").replace("-", "")
    if not column.fullmatch(compact):
        return None
    code = _region_numbers(region).country_code
    skip, prefix = len(code), "+" + code
    return [
        prefix + (digits[1 + skip :] if digits[0] == "+" else digits[2 + skip :] if digits[:2] == "00" else digits)
        for digits in compact.split("\n")
    ]


def _plain_phone(candidate: str, region: str) -> str | None:
    """The E.164 form of a plainly written valid number of ``region``; None when unsure (not "invalid")."""
    if not _PLAIN_PHONE.fullmatch(candidate):
        return None
    numbers = _region_numbers(region)
    if numbers is None:
        return None
    digits = candidate.replace(" ", "").replace("-", "")
    if digits[0] == "+" or digits.startswith("00"):
        code = numbers.country_code
        start = 1 if digits[0] == "+" else 2
        if not digits.startswith(code, start):
            return None
        national = digits[start + len(code) :]
    else:
        national = digits
        if numbers.international_prefix and numbers.international_prefix.match(national):
            return None
    if numbers.national_prefix and numbers.national_prefix.match(national):
        return None
    pattern = numbers.valid.get(len(national))
    if pattern is None or not pattern.match(national):
        return None
    return f"+{numbers.country_code}{national}"


# --- messages for numbers phonenumbers refuses -----------------------------------------------------------------
# How a number of the default region is named in messages. A small table on purpose: phonenumbers' own country
# names (phonenumbers.geocoder) cost ~100 MB and ~1 s to load, and Babel would be a dependency for one word;
# a region not listed is named by its country code ("+49 numbers").
_REGION_ADJECTIVES = {
    "IS": "Icelandic",
    "NO": "Norwegian",
    "DK": "Danish",
    "SE": "Swedish",
    "FI": "Finnish",
    "FO": "Faroese",
    "GL": "Greenlandic",
    "GB": "UK",
    "IE": "Irish",
    "DE": "German",
    "NL": "Dutch",
    "PL": "Polish",
    "FR": "French",
    "ES": "Spanish",
}
# Lengths that say "maybe a foreign number missing its country code"; too short or local-only ones do not.
_FOREIGN_LENGTHS = (phonenumbers.ValidationResult.TOO_LONG, phonenumbers.ValidationResult.INVALID_LENGTH)


def _phone_invalid_message(original: str, number: phonenumbers.PhoneNumber, region: str) -> str:
    """Why a number phonenumbers parsed is not valid, in the words of its country's numbers."""
    shown = display_value(original)
    home = number.country_code == phonenumbers.country_code_for_region(region)
    adjective = _REGION_ADJECTIVES.get(region) if home else None
    kind = f"{adjective} number" if adjective else f"+{number.country_code} number"
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == phonenumbers.ValidationResult.IS_POSSIBLE:
        # The right length, in a range no operator has been given: a typo far more often than a foreign number.
        return f"{shown} is not a valid phone number. It is not an assigned {kind}."
    lengths = [str(length) for length in _national_lengths(number.country_code)]
    if not lengths:  # a country code phonenumbers knows but has no lengths for: nothing more to say
        return f"{shown} is not a valid phone number."
    message = f"{shown} is not a valid phone number. {kind}s have {or_list(lengths)} digits."
    written_without_code = number.country_code_source == phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY
    if home and written_without_code and reason in _FOREIGN_LENGTHS:
        message += " Write a number from abroad with its country code, starting with + or 00."
    return message


def _national_lengths(country_code: int) -> tuple[int, ...]:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        country_code, phonenumbers.region_code_for_country_code(country_code)
    )
    return tuple(metadata.general_desc.possible_length) if metadata else ()


def or_list(items: list[str], or_word: str = "or") -> str:
    """“a”, “a or b”, “a, b or c”: alternatives in a sentence (holder pages pass their translated "or")."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {or_word} {items[-1]}"


def external_id_for(source: str, value: str | None, *, region: str = "IS") -> str | None:
    """The External ID a template's autofill setting derives from ``value``.

    ``None`` when autofill is off or there is nothing to derive it from; an
    invalid value raises InvalidIdentity rather than silently issuing a pass
    without an External ID (which would allow duplicates).
    """
    if source not in AUTOFILL_SOURCES:
        # A programming or configuration error, not bad holder input.
        raise ValueError(f"Unknown autofill source {source!r}; expected one of {AUTOFILL_SOURCES}.")
    if source == "off" or value is None:
        return None
    if not isinstance(value, str):
        raise InvalidIdentity(f"{display_value(value)} cannot be used as an External ID.")
    if not value.strip():
        return None
    if source == "email":
        return normalise_email(value)
    return normalise_phone(value, region=region)
