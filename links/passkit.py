"""PassKit's CSV columns and their homes in SmartPages; the pass's own values a link carries.

PassKit's SmartPass CSVs (github.com/PassKit/smart-pass-link-from-csv-generator) name their columns
``person.*``, ``members.*``, ``singleUseCoupons.*``, ``universal.*`` and ``meta.*``. Where SmartPages has a
place for a column, the mapping page offers it (and picks it by default for PassKit's names):

* ``universal.expiryDate`` / ``universal.validFrom`` → the pass's ``expirationDate`` / ``validFrom``;
* ``person.forename``, ``person.otherNames``, ``person.surname`` → the parts of a name field, used for a row
  whose display-name column is empty (or when there is none);
* ``members.member.externalId`` / ``singleUseCoupons.coupon.externalId`` → the External ID, and
  ``person.externalId`` → the External ID of a row where the program's own column is empty;
* ``meta.KEY`` (or any column staff choose) → a back field labelled ``KEY``.

Every other column is listed by name as one that reaches no pass, with the reason (``unused_reason``).

A link carries the pass's own values among its fields under keys that start with ``@`` (input-field
identifiers never do): ``@expirationDate``, ``@validFrom`` and ``@back:LABEL``. ``split_pass_values`` takes
them apart again at claim time. Pure Python: no Django.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

# Mapping targets besides the input fields and models.EXTERNAL_ID_TARGET.
EXPIRATION_TARGET = "@expirationDate"
VALID_FROM_TARGET = "@validFrom"
BACK_FIELD_TARGET = "@back"
PERSON_EXTERNAL_ID_TARGET = "@external_id_person"
# A name part target is the prefix followed by the identifier of the field it helps fill; parts are joined
# in this order with single spaces.
NAME_PART_PREFIXES = ("@forename:", "@othernames:", "@surname:")
NAME_PART_LABELS = {"@forename:": "first name", "@othernames:": "other names", "@surname:": "last name"}

# Keys of the link token's fields that are the pass's own values, not input fields.
PASS_VALUE_PREFIX = "@"
BACK_FIELD_KEY = "@back:"
PASS_DATE_KEYS = {EXPIRATION_TARGET: "expirationDate", VALID_FROM_TARGET: "validFrom"}

META_PREFIX = "meta."

# PassKit's column names (folded as selectors._fold folds them) by the target they go to by default.
EXPIRATION_ALIASES = ("universal.expiryDate", "expiryDate", "expirationDate", "expiry date")
VALID_FROM_ALIASES = ("universal.validFrom", "validFrom", "valid from")
PERSON_EXTERNAL_ID_ALIASES = ("person.externalId",)
FORENAME_ALIASES = ("person.forename", "forename", "first name", "firstName", "givenName")
OTHER_NAMES_ALIASES = ("person.otherNames", "otherNames", "middleName", "middle name")
SURNAME_ALIASES = ("person.surname", "surname", "last name", "lastName", "familyName")


def back_field_label(column: str) -> str:
    """The label of the back field a column fills: ``meta.customField`` → ``customField``."""
    return column[len(META_PREFIX) :] if column.startswith(META_PREFIX) and len(column) > len(META_PREFIX) else column


def name_part(target: str) -> tuple[str, str] | None:
    """(prefix, field identifier) for a name-part target, else None."""
    for prefix in NAME_PART_PREFIXES:
        if target.startswith(prefix) and len(target) > len(prefix):
            return prefix, target[len(prefix) :]
    return None


# --- dates -----------------------------------------------------------------------------------------------------
DATE_FORMATS_TEXT = (
    "a date (2026-12-31) or a date and time as PassKit writes them (2026-12-31T23:59:00Z, "
    "2026-12-31T23:59:00-05:00, 2026-12-31 23:59)"
)


def parse_pass_date(text: str, *, end_of_day: bool) -> datetime:
    """A PassKit date cell as an aware datetime; ValueError when it is none of DATE_FORMATS_TEXT.

    ISO 8601 / RFC 3339 as PassKit's API and its CSV generator write them. A time without an offset is UTC. A
    date alone is the start of that day (valid from) or its last second (expiry: the pass is good that day).
    """
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        return datetime.combine(day, time(23, 59, 59) if end_of_day else time.min, tzinfo=UTC)
    if len(text) < 16 or text[4] != "-" or text[7] != "-":  # fromisoformat takes "20261231", PassKit never
        raise ValueError(text)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def pass_date_problem(column: str, text: str, *, end_of_day: bool, now: datetime) -> tuple[str, str, str]:
    """(ISO value for SmartPages or "", error or "", warning or "") for one date cell of a row."""
    try:
        moment = parse_pass_date(text, end_of_day=end_of_day)
    except ValueError:
        return "", f"{column}: “{text}” is not a date; write {DATE_FORMATS_TEXT}.", ""
    warning = ""
    if end_of_day and moment <= now:
        # PassKit makes such passes too (already expired): a warning, not a refusal.
        warning = f"{column} {text} has passed; the pass will be issued already expired."
    return moment.isoformat(), "", warning


# --- claim time ------------------------------------------------------------------------------------------------
def split_pass_values(fields: dict[str, str]) -> tuple[dict[str, str], dict]:
    """A link's fields split into (input-field values, the pass's own values as SmartPages' create takes them:
    ``expirationDate``, ``validFrom``, ``backFields [{label, value}]``)."""
    if not any(key.startswith(PASS_VALUE_PREFIX) for key in fields):
        return fields, {}
    values: dict[str, str] = {}
    extras: dict = {}
    back: list[dict[str, str]] = []
    for key, value in fields.items():
        if not key.startswith(PASS_VALUE_PREFIX):
            values[key] = value
        elif key in PASS_DATE_KEYS:
            extras[PASS_DATE_KEYS[key]] = value
        elif key.startswith(BACK_FIELD_KEY):
            back.append({"label": key[len(BACK_FIELD_KEY) :], "value": value})
    if back:
        extras["backFields"] = back
    return values, extras


# --- columns that reach no pass --------------------------------------------------------------------------------
_UNUSED_REASONS = (
    ("universal.optIn", "PassKit's marketing opt-in; SmartPages passes have no such setting."),
    ("universal.", "a PassKit program setting that SmartPages passes do not have."),
    ("members.tier.", "PassKit's tier; in SmartPages a tier is a template of its own: upload to that template."),
    ("members.member.profileImage", "SmartPages takes no picture per pass."),
    ("members.member.", "PassKit's points and member data; SmartPages passes keep no points."),
    ("singleUseCoupons.", "PassKit's coupon data; SmartPages keeps offers on the template."),
    ("location[", "SmartPages keeps locations on the template, not on each pass."),
    ("utm_", "PassKit's campaign tracking; SmartPass links carry no tracking."),
    ("person.", "no input field of this template takes it; choose one, or “Back field”, to keep it."),
)
_NOT_MAPPED = "not chosen for any field; choose one, or “Back field”, to keep it."


def unused_reason(column: str) -> str:
    """Why a column left out of the mapping reaches no pass (a sentence fragment for staff)."""
    for start, reason in _UNUSED_REASONS:
        if column.startswith(start):
            return reason
    return _NOT_MAPPED
