"""Folding text for the member search: what staff type finds how names were written.

`gudrun` must find Guðrún, `thora` Þóra and `aegir` Ægir, so both the stored text and the query go through
`fold`: casefold, Icelandic (and other Nordic) letters spelled out the way they are typed on a keyboard
without them (þ→th, ð→d, æ→ae, ø→o, œ→oe), then every accent stripped (á→a, ö→o, é→e …) through Unicode
decomposition. Done in Python, not in PostgreSQL (`unaccent` is an extension needing superuser rights on
many hosts, and knows neither þ→th nor SQLite): the services store the folded text in `Member.search_text`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

# Letters that do not decompose into a base letter plus accents, spelled as they are typed without them.
# Lowercase only: `fold` casefolds first.
_SPELLED_OUT = str.maketrans({"þ": "th", "ð": "d", "æ": "ae", "ø": "o", "œ": "oe", "đ": "d", "ł": "l", "ı": "i"})

# Between the parts of the stored text: a query (one line from a search box) cannot contain it, so a match
# never spans the end of a name and the start of an email.
SEPARATOR = "\n"


def fold(text: str) -> str:
    """Casefolded, Icelandic letters spelled out, accents stripped. Character by character, so
    fold(a + b) == fold(a) + fold(b) and a substring of the text folds to a substring of the folded text."""
    # Twice: decomposing may leave uppercase compatibility forms (ℌ→H) and casefolding may leave accents (ǰ).
    return _fold_once(_fold_once(text))


def _fold_once(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_SPELLED_OUT))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def search_key(text: str) -> str:
    """A query as it is searched: folded, whitespace runs made one space, trimmed."""
    return " ".join(fold(text).split())


def member_search_text(*, display_name: str, email: str) -> str:
    """What `Member.search_text` holds: the name and the email, folded. (The External ID is searched whole and
    case-insensitively through its own index: autofill fills it in bulk without touching this column.)"""
    return SEPARATOR.join(search_key(part or "") for part in (display_name, email))


# The copies a member keeps for search, by the input-field format they come from.
_COPY_BY_FORMAT = {"TEXT": "display_name", "EMAIL": "email", "PHONE_NUMBER": "phone"}
# The Member columns' max_length (this module imports no models: migration 0004 uses it).
_MAX_LENGTHS = {"display_name": 500, "email": 254, "phone": 32}


def member_search_fields(*, specs: Iterable, values: Mapping[str, str]) -> dict[str, str]:
    """Name, email and phone for search, taken from the first TEXT / EMAIL / PHONE_NUMBER field with a value,
    and the folded `search_text` made of them.

    Validation already normalised EMAIL and PHONE_NUMBER values, so these are the normalised forms."""
    copies = {"display_name": "", "email": "", "phone": ""}
    # A field named like a name wins over other text fields (company, car plate …).
    ordered = sorted(specs, key=lambda s: 0 if "name" in s.identifier.lower() or "nafn" in s.label.lower() else 1)
    for spec in ordered:
        key = _COPY_BY_FORMAT.get(spec.format.upper())
        value = str(values.get(spec.identifier) or "")
        if key and value and not copies[key]:
            copies[key] = value[: _MAX_LENGTHS[key]]
    copies["search_text"] = member_search_text(display_name=copies["display_name"], email=copies["email"])
    return copies
