"""Folding text for the member search: what staff type finds how names were written.

`gudrun` must find Guðrún, `thora` Þóra and `aegir` Ægir, so both the stored text and the query go through
`fold`: casefold, Icelandic (and other Nordic) letters spelled out the way they are typed on a keyboard
without them (þ→th, ð→d, æ→ae, ø→o, œ→oe), then every accent stripped (á→a, ö→o, é→e …) through Unicode
decomposition. Done in Python, not in PostgreSQL (`unaccent` is an extension needing superuser rights on
many hosts, and knows neither þ→th nor SQLite): the services store the folded text in `Member.search_text`.
"""

from __future__ import annotations

import re
import string
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


# --- anchors: what lets a query with a separator skip the trigram scan -------------------------------------------
# A query of one word ("gudrun", "dottir") can sit anywhere inside a word, and only the trigram index finds that.
# A query with a separator in it ("gudrun yr jonsdottir", "passkit.example", "thora@") pins down words on each
# side of every separator: the word after a separator begins right there, the word before one ends there. So
# the search text's anchors - each separator with the start of the word after it, and (reversed, marked) the
# end of the word before it - hold every such query's anchors too, and a GIN index on them finds the few
# members holding all of a query's anchors by whole-lexeme lookups, which PostgreSQL intersects cheaply and
# estimates from its statistics (common anchors are in them). The text check then keeps the members that hold
# the query itself. PostgreSQL builds the anchors in `member_search_anchors(search_text)` (migration 0006);
# `anchors` is its twin here, and the tests hold the two equal.

# What ends a word: ASCII space and punctuation ("." and "@" in addresses, "-" in names). Everything else,
# letters of any script and digits included, is part of a word.
WORD_SEPARATORS = " " + string.punctuation
_SEPARATOR_CLASS = re.escape(WORD_SEPARATORS)
_SEPARATOR_THEN_WORD = re.compile(f"[{_SEPARATOR_CLASS}][^{_SEPARATOR_CLASS}]+")
_WORD_THEN_SEPARATOR = re.compile(f"[^{_SEPARATOR_CLASS}]+[{_SEPARATOR_CLASS}]")
# Marks a backward anchor (a separator and the end of the word before it, read backwards): the stored text's
# parts and a query never contain it, so the two kinds never match each other.
BACKWARD = SEPARATOR
# How much of a word an anchor keeps: its first (last) 3 letters, and its first (last) 5. Short enough that
# anchors repeat (a small index whose statistics know the common ones; with 6 letters the unique numbers in
# addresses made it three times as large); two lengths so that a query's word cut off by its end ("jon
# jonsson" may be "...jon jonsson...") still gives an anchor from 3 letters, and a longer one the more telling
# 5-letter anchor.
ANCHOR_LETTERS = (3, 5)


def anchors(text: str) -> set[str]:
    """The anchors of a stored search text, within each of its parts: every separator with the first letters
    of the word after it, and - behind BACKWARD - every separator with the last letters of the word before it,
    read backwards."""
    found: set[str] = set()
    for part in text.split(SEPARATOR):
        for letters in ANCHOR_LETTERS:
            found.update(_forward(match.group(), letters) for match in _SEPARATOR_THEN_WORD.finditer(part))
            found.update(_backward(match.group(), letters) for match in _WORD_THEN_SEPARATOR.finditer(part))
    return found


def _forward(separator_then_word: str, letters: int) -> str:
    return separator_then_word[: 1 + letters]


def _backward(word_then_separator: str, letters: int) -> str:
    return BACKWARD + word_then_separator[::-1][: 1 + letters]


def key_anchors(key: str) -> list[str]:
    """Anchors that every search text containing `key` holds. A word between two separators of the key is
    whole; one the key cuts off (its first word, before a separator; its last, after one) may go on in the
    stored text, so it gives the anchor of as many letters as it has (5, else 3; none from fewer). Empty for
    a key without a separator: only the trigram index finds that."""
    found = []
    for match in _SEPARATOR_THEN_WORD.finditer(key):
        if letters := _letters_known(len(match.group()) - 1, whole=match.end() < len(key)):
            found.append(_forward(match.group(), letters))
    for match in _WORD_THEN_SEPARATOR.finditer(key):
        if letters := _letters_known(len(match.group()) - 1, whole=match.start() > 0):
            found.append(_backward(match.group(), letters))
    return list(dict.fromkeys(found))


def _letters_known(length: int, *, whole: bool) -> int:
    """Which anchor length a word of the key gives: the longest kept one that the stored word surely has."""
    if whole:
        return max(ANCHOR_LETTERS)  # the anchor of a word shorter than that is the word itself
    return max((letters for letters in ANCHOR_LETTERS if letters <= length), default=0)


def anchors_tsquery(key: str) -> str:
    """`key_anchors` as tsquery text (whole lexemes, all required); empty when the key has none."""
    return " & ".join("'" + anchor.replace("\\", "\\\\").replace("'", "''") + "'" for anchor in key_anchors(key))


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
