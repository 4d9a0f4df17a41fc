"""Codes of short links (`{PUBLIC_BASE_URL}/s/{code}`): random, unguessable, safe at the end of a link.

A code is CODE_LENGTH (12) characters of the 62 letters and digits: two that name the chunk of a batch it was
made in (`stretch`: the chunk's id, modulo 62²), then RANDOM_LENGTH (10) of its own: 10 × log2(62) ≈ 59.5
random bits (the issue asks for at least 58), so guessing one of a million live codes takes ~2^40 tries
against a rate-limited lookup. The two first characters are not secret; they put a chunk's codes into a
stretch of the primary key's index that no recent chunk wrote to (they wrap around after 62² chunks), so that
a chunk's sorted COPY writes there in order instead of into one 62nd of an index that grows with every
campaign (bench/README.md, short links). Codes of 11 characters (one random first character per chunk, the
first format) still resolve.
Letters and digits only: no autolinker drops one from the end of a link, no mail client breaks a line at one,
and nothing needs escaping anywhere. With a 24-character PUBLIC_BASE_URL a short link is 39 characters.

Codes come from os.urandom in pools (a system call per code would cost more than the rest of the code), by
rejection: a random byte below 248 (= 4 × 62) picks ALPHABET[byte % 62] — every character equally likely —
and bytes 248-255 are dropped. bytes.translate does both for a whole pool at C speed.
"""

from __future__ import annotations

import os
import re
import string
import threading

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
STRETCH_LENGTH, RANDOM_LENGTH = 2, 10
CODE_LENGTH = STRETCH_LENGTH + RANDOM_LENGTH
CODE_RE = re.compile(rf"[0-9A-Za-z]{{{CODE_LENGTH - 1},{CODE_LENGTH}}}\Z")  # 11: the first format's codes
_KEPT = 4 * len(ALPHABET)  # 248
_TABLE = bytes(ord(ALPHABET[byte % len(ALPHABET)]) if byte < _KEPT else 0 for byte in range(256))
_REJECTED = bytes(range(_KEPT, 256))


def is_code(text: str) -> bool:
    """Whether `text` has the shape of a code (a malformed one is refused before any lookup)."""
    return bool(CODE_RE.match(text))


class _CodePool:
    """Codes cut from a pool of random characters, under a lock; emptied in a forked child, so a parent and its
    children (the --jobs processes) never hand out the same characters."""

    POOL_CODES = 4096

    def __init__(self) -> None:
        self.forget()

    def take(self, count: int) -> str:
        with self.lock:
            position = self.position
            if position + count > len(self.pool):
                self.pool, position = self._fill(), 0
            self.position = position + count
            return self.pool[position : position + count]

    def _fill(self) -> str:
        wanted = CODE_LENGTH * self.POOL_CODES
        chars = b""
        while len(chars) < wanted:
            # 248/256 of the bytes are kept; ask for a little more than needed so one call nearly always does.
            chars += os.urandom(wanted * 33 // 32 + 64).translate(_TABLE, _REJECTED)
        return chars[:wanted].decode("ascii")

    def forget(self) -> None:
        self.lock = threading.Lock()
        self.pool, self.position = "", 0


_POOL = _CodePool()
os.register_at_fork(after_in_child=_POOL.forget)


def stretch(number: int) -> str:
    """The first characters of the codes of chunk `number` (its id): consecutive chunks, consecutive stretches."""
    number %= len(ALPHABET) ** STRETCH_LENGTH
    return ALPHABET[number // len(ALPHABET)] + ALPHABET[number % len(ALPHABET)]


def new_code(lead: str) -> str:
    """A code starting with `lead` (a stretch())."""
    return lead + _POOL.take(RANDOM_LENGTH)
