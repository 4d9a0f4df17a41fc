"""Validate values against a template's input fields.

One implementation shared by the CSV upload, the staff "Add member" form and
the public claim form, so a value accepted in one place is accepted in all of
them and stored in the same normalised form.

Pure Python on purpose (no Django): callers turn template input fields into
FieldSpec/TemplateRules and show the returned sentences as they are.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

from stdnum.is_ import kennitala as stdnum_kennitala

from members.identity import (
    InvalidIdentity,
    display_value,
    normalise_email,
    normalise_phone,
    or_list,
    plain_email,
    plain_emails,
    plain_phone,
    plain_phones,
)

__all__ = [
    "FORMATS",
    "MAX_LENGTH",
    "FieldResult",
    "FieldSpec",
    "TemplateRules",
    "ValuesValidator",
    "validate_field",
    "validate_values",
]

FORMATS: tuple[str, ...] = ("TEXT", "NUMBER", "DATE", "EMAIL", "URL", "KENNITALA", "PHONE_NUMBER")

# One cap for every format: it keeps a pathological CSV cell from reaching the
# parsers, and a pass field longer than this is a mistake, not data.
MAX_LENGTH = 1000


@dataclass(frozen=True)
class FieldSpec:
    """What validation needs of a template input field."""

    identifier: str
    label: str
    format: str  # TEXT, NUMBER, DATE, EMAIL, URL, KENNITALA, PHONE_NUMBER
    is_mandatory: bool = False
    type: str = "ISSUER"  # ISSUER | MEMBER: who enters the value

    @property
    def name(self) -> str:
        """The label people see; the identifier when a template has no label."""
        return self.label.strip() or self.identifier

    @property
    def asked_of_holder(self) -> bool:
        """Whether the claim page asks the holder for this value when the link leaves it empty: a required value
        the holder enters (MEMBER). An optional one is not asked for."""
        return self.is_mandatory and self.type.upper() == "MEMBER"


@dataclass(frozen=True)
class TemplateRules:
    """Template-level rules."""

    # Empty means any domain; only enforced when non-empty.
    allowed_email_domains: tuple[str, ...] = ()
    # None (or 0) means no age check.
    kennitala_min_age: int | None = None

    def applies_to(self, spec: FieldSpec) -> bool:
        """Whether a rule of the template, beyond the field's format, decides which values the field takes."""
        kind = spec.format.upper()
        return bool(
            (kind == "EMAIL" and self.allowed_email_domains) or (kind == "KENNITALA" and self.kennitala_min_age)
        )


@dataclass(frozen=True)
class FieldResult:
    # The normalised value to store/send ('' when empty). On error it is the
    # trimmed input, so a form can show back what was typed.
    value: str
    # '' when fine; else a short sentence naming the field label.
    error: str = ""
    # A doubt that must not block issuing (a kennitala check digit).
    warning: str = ""


def validate_field(
    spec: FieldSpec,
    raw: str | None,
    *,
    rules: TemplateRules = TemplateRules(),
    region: str = "IS",
    today: date | None = None,
    check_mandatory: bool = True,
) -> FieldResult:
    """Validate and normalise one value for one input field.

    ``check_mandatory=False`` lets an empty mandatory field pass, for callers
    where someone else fills it in later (an issuer's CSV may leave MEMBER
    fields to the holder's claim form).
    """
    required = spec.is_mandatory and check_mandatory
    return FieldResult(*_validate(spec, _format_check(spec), required, raw, rules, region, today or date.today()))


def validate_values(
    specs: Iterable[FieldSpec],
    values: Mapping[str, str],
    *,
    rules: TemplateRules = TemplateRules(),
    region: str = "IS",
    today: date | None = None,
    require_types: set[str] | None = None,
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Validate every field of a template at once.

    Returns (clean values, errors, warnings), each keyed by identifier. Clean
    values hold every field that has no error ('' for an empty optional one).
    A mandatory field is required only when its type is in ``require_types``
    (None = all types). Values for identifiers that are not fields are ignored.
    """
    validator = ValuesValidator(specs, rules=rules, region=region, today=today, require_types=require_types)
    return validator.validate(values)


class ValuesValidator:
    """validate_values for many sets of values against the same fields (the rows of a CSV): which check each
    field gets and whether it is required are worked out once, not once per row."""

    def __init__(
        self,
        specs: Iterable[FieldSpec],
        *,
        rules: TemplateRules = TemplateRules(),
        region: str = "IS",
        today: date | None = None,
        require_types: set[str] | None = None,
    ) -> None:
        self.rules = rules
        self.region = region
        self.today = today or date.today()
        self.fields: list[tuple[FieldSpec, _Check, bool]] = []
        # For each field, the format's fast path where one gives the same answer as its check: (text, region)
        # → the normalised value, or None to run the check.
        self.fast: list[Callable[[str, str], str | None] | None] = []
        # And where a whole column of stripped values can be answered at once: the values, or None (unsure).
        self.fast_column: list[Callable[[list[str]], list[str] | None] | None] = []
        seen: set[str] = set()
        for spec in specs:
            if spec.identifier in seen:
                continue  # a duplicated field definition: the first one wins
            seen.add(spec.identifier)
            required = spec.is_mandatory and (require_types is None or spec.type in require_types)
            self.fields.append((spec, _format_check(spec), required))
            kind = spec.format.upper()
            if kind == "EMAIL" and not rules.allowed_email_domains:
                self.fast_column.append(plain_emails)
            elif kind == "PHONE_NUMBER":
                self.fast_column.append(functools.partial(plain_phones, region=self.region))
            else:
                self.fast_column.append(None)
            self.fast.append(
                None
                if kind == "EMAIL" and rules.allowed_email_domains
                else _FAST_CHECKS.get(kind if kind in _VALIDATORS else "TEXT")
            )

    @property
    def identifiers(self) -> list[str]:
        """The fields' identifiers, in the order validate_in_order takes their values."""
        return [spec.identifier for spec, _, _ in self.fields]

    def validate(self, values: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(clean values, errors, warnings) as validate_values returns them."""
        return self.validate_in_order([values.get(spec.identifier) for spec, _, _ in self.fields])

    def validate_in_order(self, values: Sequence[object]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """validate() for the values of `identifiers`, in that order (None for a value not given): the rows of
        a CSV, without a mapping built for each."""
        clean: dict[str, str] = {}
        errors: dict[str, str] = {}
        warnings: dict[str, str] = {}
        rules, region, today = self.rules, self.region, self.today
        for (spec, check, required), fast, raw in zip(self.fields, self.fast, values):  # noqa: B905 - one per field
            # The usual value (text that is neither blank nor too long) checked here, without _validate's call.
            text = raw.strip() if type(raw) is str else None
            if text and len(text) <= MAX_LENGTH:
                if fast is not None and (value := fast(text, region)) is not None:
                    clean[spec.identifier] = value
                    continue
                try:
                    value, warning = check(spec, text, rules, region, today)
                except _FieldError as exc:
                    errors[spec.identifier] = f"{spec.name}: {exc.message}"
                    continue
                clean[spec.identifier] = value
                if warning:
                    warnings[spec.identifier] = warning
                continue
            value, error, warning = _validate(spec, check, required, raw, rules, region, today)
            if error:
                errors[spec.identifier] = error
            else:
                clean[spec.identifier] = value
            if warning:
                warnings[spec.identifier] = warning
        return clean, errors, warnings


def _format_check(spec: FieldSpec) -> _Check:
    # An unknown format from upstream should not block issuing: treat it as
    # text (upstream remains the final judge).
    return _VALIDATORS.get(spec.format.upper(), _check_text)


def _validate(
    spec: FieldSpec, check: _Check, required: bool, raw: object, rules: TemplateRules, region: str, today: date
) -> tuple[str, str, str]:
    """(value, error, warning) as FieldResult holds them; a plain tuple because it is made for every value of
    every CSV row."""
    # Values from a token or JSON body may be numbers; compare them as text.
    text = (raw if isinstance(raw, str) else "" if raw is None else str(raw)).strip()
    if not text:
        return ("", f"{spec.name} is required.", "") if required else ("", "", "")
    if len(text) > MAX_LENGTH:
        return text, f"{spec.name}: the value is too long (at most {MAX_LENGTH} characters).", ""
    try:
        value, warning = check(spec, text, rules, region, today)
    except _FieldError as exc:
        return text, f"{spec.name}: {exc.message}", ""
    return value, "", warning


# A format check: (the normalised value, a warning or ""), or _FieldError.
_Check = Callable[[FieldSpec, str, TemplateRules, str, date], tuple[str, str]]


class _FieldError(Exception):
    """Raised by a format check; validate_field prefixes the field name."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_text(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    # PostgreSQL text cannot hold NUL, and no person means to type one.
    if "\x00" in text:
        raise _FieldError("the value contains a NUL character.")
    return text, ""


_INTEGER = re.compile(r"[+-]?[0-9]+")
_GROUPED = re.compile(r"[+-]?[0-9]{1,3}([.,][0-9]{3})+")


def _check_number(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    if _INTEGER.fullmatch(text):
        sign = "-" if text.startswith("-") else ""
        digits = text.lstrip("+-").lstrip("0") or "0"
        # String work instead of int(): no "-0", and no int-size limit to hit.
        return ("" if digits == "0" else sign) + digits, ""
    # Say why: "1.000" is a thousand in Icelandic and one in English, so
    # guessing would silently store the wrong number.
    if _GROUPED.fullmatch(text):
        raise _FieldError(
            f"{display_value(text)} is not a whole number. Write it without thousands separators, e.g. 1000."
        )
    if re.fullmatch(r"[+-]?[0-9]*[.,][0-9]+", text):
        raise _FieldError(f"{display_value(text)} is not a whole number. Decimals are not allowed.")
    if re.fullmatch(r"[+-]?[0-9][0-9 \u00a0]*", text):
        raise _FieldError(f"{display_value(text)} is not a whole number. Remove the spaces.")
    raise _FieldError(f"{display_value(text)} is not a whole number.")


_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_ICELANDIC_DATE = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")


def _check_date(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    if match := _ISO_DATE.fullmatch(text):
        year, month, day = (int(part) for part in match.groups())
    elif match := _ICELANDIC_DATE.fullmatch(text):
        day, month, year = (int(part) for part in match.groups())
    else:
        raise _FieldError(f"{display_value(text)} is not a date. Use yyyy-mm-dd or dd.mm.yyyy.")
    try:
        value = date(year, month, day)
    except ValueError:
        raise _FieldError(f"{display_value(text)} is not a real date.") from None
    return value.isoformat(), ""


def _check_email(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    try:
        value = normalise_email(text)
    except InvalidIdentity as exc:
        raise _FieldError(str(exc)) from None
    if rules.allowed_email_domains:
        allowed = [domain.strip().lstrip("@").lower() for domain in rules.allowed_email_domains]
        allowed = [domain for domain in allowed if domain]
        # Exact domain match: a template limited to school.is should not admit
        # mail.school.is.evil.com, and subdomains are listed when meant.
        if allowed and value.rsplit("@", 1)[1] not in allowed:
            raise _FieldError(f"{display_value(value)} is not allowed. Use an address at {or_list(allowed)}.")
    return value, ""


# Characters never valid unescaped in a URL; a browser would mangle them.
_URL_FORBIDDEN = re.compile(r"[\s<>\"{}|\\^`\x00-\x1f\x7f]")


def _check_url(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    if _URL_FORBIDDEN.search(text):
        raise _FieldError(
            f"{display_value(text)} is not a valid web address. It contains spaces or characters a URL cannot have."
        )
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
        _ = parts.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise _FieldError(f"{display_value(text)} is not a valid web address.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _FieldError(f"{display_value(text)} is not a valid web address. It must start with http:// or https://.")
    if not hostname:
        raise _FieldError(f"{display_value(text)} is not a valid web address. It has no host name.")
    # Kept as typed: paths and queries are case-sensitive, and rebuilding the
    # URL from its parts could change what the issuer meant.
    return text, ""


# The century digit (last) maps to the first two digits of the year.
_KENNITALA_CENTURY = {"8": 1800, "9": 1900, "0": 2000}


def _check_kennitala(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    # People write 010130-2989 or 010130 2989; store the ten digits.
    number = text.replace("-", "", 1) if text.count("-") == 1 else text
    number = number.replace(" ", "", 1) if number.count(" ") == 1 else number
    if not re.fullmatch(r"[0-9]{10}", number):
        raise _FieldError(f"{display_value(text)} is not a kennitala. A kennitala has 10 digits, e.g. 010130-2989.")
    day, month, year = int(number[0:2]), int(number[2:4]), int(number[4:6])
    century = _KENNITALA_CENTURY.get(number[9])
    if century is None:
        raise _FieldError(f"{display_value(text)} is not a kennitala. Its last digit must be 8, 9 or 0.")
    # Companies and other organisations add 40 to the day.
    is_company = day > 40
    if is_company:
        day -= 40
    try:
        born = date(century + year, month, day)
    except ValueError:
        raise _FieldError(
            f"{display_value(text)} is not a kennitala. Its first six digits are not a real date."
        ) from None
    if born > today:
        raise _FieldError(f"{display_value(text)} is not a kennitala. Its date is in the future.")

    min_age = rules.kennitala_min_age
    if min_age:
        if is_company:
            raise _FieldError(f"{display_value(text)} must be a person's kennitala, not a company's.")
        # Birthday not yet reached this year → one year younger. A 29 February
        # birthday is reached on 1 March in other years.
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        if age < min_age:
            raise _FieldError(f"the holder must be at least {min_age} years old.")

    warning = ""
    # Since February 2026 some newly issued kennitölur fail the old mod-11
    # check digit, so a mismatch is a doubt to show, not a reason to refuse.
    if stdnum_kennitala.checksum(number) != 0:
        warning = (
            f"{spec.name}: the check digit of {display_value(text)} does not match. "
            "Please double-check the number (some kennitölur issued since February 2026 fail this check)."
        )
    return number, warning


def _check_phone(spec: FieldSpec, text: str, rules: TemplateRules, region: str, today: date) -> tuple[str, str]:
    try:
        return normalise_phone(text, region=region), ""
    except InvalidIdentity as exc:
        raise _FieldError(str(exc)) from None


def _plain_text(text: str, region: str) -> str | None:
    return text if "\x00" not in text else None


# Formats whose check has a fast path for the usual value (see ValuesValidator.fast); no warning comes from it.
_FAST_CHECKS: dict[str, Callable[[str, str], str | None]] = {
    "TEXT": _plain_text,
    "EMAIL": plain_email,
    "PHONE_NUMBER": plain_phone,
}

_VALIDATORS: dict[str, _Check] = {
    "TEXT": _check_text,
    "NUMBER": _check_number,
    "DATE": _check_date,
    "EMAIL": _check_email,
    "URL": _check_url,
    "KENNITALA": _check_kennitala,
    "PHONE_NUMBER": _check_phone,
}
