"""External ID normalisation for members.

A template with autofill on derives a member's External ID from the holder's
email address or phone number. The External ID is unique per template, so two
spellings of the same address or number must give the same string, and
normalising an already normalised value must change nothing.

Pure Python on purpose (no Django): the CSV task, the forms and the claim flow
all call this, and it is tested without settings or a database.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

__all__ = [
    "AUTOFILL_SOURCES",
    "InvalidIdentity",
    "display_value",
    "external_id_for",
    "normalise_email",
    "normalise_phone",
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
            f"{shown} is not a valid email address. "
            f"It is longer than {_MAX_EMAIL_LENGTH} characters."
        )
    try:
        info = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidIdentity(
            f"{shown} is not a valid email address. {_email_reason(exc)}"
        ) from None
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
                f"{shown} is not a valid email address. "
                "It contains characters that cannot be written consistently."
            )
    return normalised


def _email_reason(exc: EmailNotValidError) -> str:
    """email_validator's explanation without its redundant lead-in."""
    reason = str(exc).strip()
    lead_in = "The email address is not valid. "
    if reason.startswith(lead_in):
        reason = reason[len(lead_in):]
    return reason


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
    # phonenumbers would turn letters into digits (vanity numbers, 555-ABCD);
    # for an identity key a letter is far more likely a typo, so refuse it.
    # "ext"/"x" extensions are refused too: E.164 has no place for them.
    if any(ch.isalpha() for ch in candidate):
        raise InvalidIdentity(
            f"{display_value(candidate)} is not a valid phone number. It contains letters."
        )
    compact = "".join(ch for ch in candidate if ch not in " \t-./()\u00a0")
    if compact.startswith("00"):
        candidate = "+" + compact[2:]
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity(_phone_parse_message(value.strip(), exc)) from None
    except Exception:  # noqa: BLE001 - the contract is "InvalidIdentity or a value", never a crash
        raise InvalidIdentity(f"{display_value(value.strip())} is not a valid phone number.") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidIdentity(
            f"{display_value(value.strip())} is not a valid phone number. "
            f"Check the digits, and add the country code (e.g. +44) for a number outside {region}."
        )
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
