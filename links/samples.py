"""A sample campaign CSV for a template: its input fields as the header and three plausible Icelandic rows.

Staff download it from the upload and template pages to see what a file should look like; uploaded as it is,
it makes three links without an error or a warning (a test holds it to that). The people are invented; their
kennitölur pass the check digit, their phone numbers are in assigned Icelandic mobile ranges.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from members.selectors import template_field_specs, template_rules
from members.validation import FieldSpec
from templates_sync.models import PassTemplate


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    email_local: str
    phone: str
    kennitala: str
    born: str
    address: str
    postcode: str
    town: str


_PEOPLE = (
    _Person(
        "Guðrún",
        "Jónsdóttir",
        "gudrun.jonsdottir",
        "+354 661 2345",
        "120385-2089",
        "1985-03-12",
        "Laugavegur 12",
        "101",
        "Reykjavík",
    ),
    _Person(
        "Sigurður",
        "Einarsson",
        "sigurdur.einarsson",
        "+354 771 2345",
        "240791-2189",
        "1991-07-24",
        "Hafnarstræti 3",
        "600",
        "Akureyri",
    ),
    _Person(
        "Þórdís",
        "Ólafsdóttir",
        "thordis.olafsdottir",
        "+354 822 1234",
        "050688-2089",
        "1988-06-05",
        "Aðalstræti 7",
        "400",
        "Ísafjörður",
    ),
)
DEFAULT_EMAIL_DOMAIN = "example.is"

# Words in an identifier or label (folded) that say what a text field holds, in English and Icelandic.
_TEXT_KINDS = (
    ("first", ("first", "forename", "given", "fornafn")),
    ("last", ("last", "surname", "family", "eftirnafn", "föðurnafn")),
    ("name", ("name", "nafn")),
    ("address", ("address", "street", "heimilisfang", "gata")),
    ("postcode", ("postal", "postcode", "zip", "póstnúmer")),
    ("town", ("city", "town", "bær", "staður", "sveitarfélag")),
)


def _fold(text: str) -> str:
    return re.sub(r"[\s_.\-]+", "", text).casefold()


def _text_value(spec: FieldSpec, person: _Person, number: int) -> str:
    words = _fold(spec.identifier) + " " + _fold(spec.label)
    kind = next((kind for kind, hints in _TEXT_KINDS if any(hint in words for hint in hints)), None)
    if kind == "first":
        return person.first
    if kind == "last":
        return person.last
    if kind == "name":
        return f"{person.first} {person.last}"
    if kind is not None:
        return getattr(person, kind)
    return f"{spec.name} {number}"


def _value(spec: FieldSpec, person: _Person, number: int, email_domain: str) -> str:
    field_format = spec.format.upper()
    if field_format == "EMAIL":
        return f"{person.email_local}@{email_domain}"
    if field_format == "PHONE_NUMBER":
        return person.phone
    if field_format == "KENNITALA":
        return person.kennitala
    if field_format == "DATE":
        return person.born
    if field_format == "NUMBER":
        return str(1000 + number)
    if field_format == "URL":
        return f"https://{email_domain}/{person.email_local}"
    return _text_value(spec, person, number)


def link_sample_csv(*, template: PassTemplate) -> str:
    """The sample file's text: a header of the template's input-field identifiers and three rows."""
    specs = template_field_specs(template=template)
    allowed = [domain.strip().lstrip("@").lower() for domain in template_rules(template=template).allowed_email_domains]
    email_domain = next((domain for domain in allowed if domain), DEFAULT_EMAIL_DOMAIN)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([spec.identifier for spec in specs])
    for number, person in enumerate(_PEOPLE, start=1):
        writer.writerow([_value(spec, person, number, email_domain) for spec in specs])
    return out.getvalue()
