"""Icelandic alphabetical order for member names, on PostgreSQL and SQLite alike.

PostgreSQL sorts with the ICU collation "is-x-icu" (migration 0012 creates it where the server lacks it, and an
index on the name in that collation keeps the sorted list fast). SQLite has no ICU: the same name is
registered on each of its connections (members.apps) with `icelandic_compare`, so one
`ORDER BY display_name COLLATE "is-x-icu"` works on both.

The order is the Icelandic alphabet's: a á b (c) d ð e é f g h i í j k l m n o ó p (q) r s t u ú v (w) x y ý
(z) þ æ ö — the accented vowels and ð, þ, æ, ö are letters of their own, not variants; case only breaks ties
(lower case first, as ICU does). Other accented letters sort with their base letter, ä with æ and ø with ö
(as in CLDR's Icelandic rules). Spaces and punctuation before digits, digits before letters.
"""

from __future__ import annotations

import functools
import unicodedata

ICELANDIC_COLLATION = "is-x-icu"

_ALPHABET = "aábcdðeéfghiíjklmnoópqrstuúvwxyýzþæö"
_RANK = {letter: index for index, letter in enumerate(_ALPHABET)}
_RANK.update({"ä": _RANK["æ"], "ø": _RANK["ö"], "đ": _RANK["ð"]})


def _primary(ch: str) -> tuple[int, int]:
    lower = ch.lower()
    rank = _RANK.get(lower)
    if rank is None:
        base = unicodedata.normalize("NFKD", lower)[:1]
        rank = _RANK.get(base)
    if rank is not None:
        return (3, rank)
    if ch.isdigit():
        return (2, ord(ch))
    if ch.isalpha():
        return (3, len(_ALPHABET) + ord(ch))  # other scripts after the Icelandic letters
    return (1, ord(ch))


@functools.lru_cache(maxsize=65536)
def icelandic_sort_key(text: str) -> tuple:
    """A key that sorts strings in Icelandic alphabetical order (see the module's docstring)."""
    text = unicodedata.normalize("NFC", text)
    return (
        tuple(_primary(ch) for ch in text),
        tuple(ch.isupper() for ch in text),  # lower case first on a tie
        text,
    )


def icelandic_compare(left: str, right: str) -> int:
    """SQLite's collation callback: negative, zero or positive, as `left` sorts before, with or after `right`."""
    a, b = icelandic_sort_key(left), icelandic_sort_key(right)
    return (a > b) - (a < b)


def register_sqlite_collation(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: give every SQLite connection the collation PostgreSQL has from ICU."""
    if connection.vendor == "sqlite":
        connection.connection.create_collation(ICELANDIC_COLLATION, icelandic_compare)
