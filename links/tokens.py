"""SmartPass link tokens: self-contained, authenticated, encrypted.

A token carries everything a claim needs (template id, field values, optional
External ID, batch/row, optional expiry), so a link keeps working when its
batch record is gone.  Pure Python: no Django, no database.

Token bytes (the whole thing is base64url without padding)::

    version (1 byte) | key-id length (1 byte) | key id (1-16 ASCII bytes)
    | nonce (12 random bytes) | AES-256-GCM ciphertext + 16-byte tag

The header (version, key-id length and key id) is the GCM associated data, so
it cannot be changed without the tag failing.

Plaintext::

    flags (1 byte) | template UUID (16 bytes) | body (raw deflate when flagged)

The single-use flag has no body: it says "one pass per row" (the first claim of
batch/row issues, every later one shows that pass), so it needs batch and row.

The body holds, in this order and only when the matching flag is set:
batch id (varint), row (varint), expiry (varint Unix seconds), External ID
(string); then field pairs (key, value) until the end.  A string is a varint
byte length followed by UTF-8.  A field key is written as a varint ``h``:
``h`` odd means "well-known identifier number ``h >> 1``" (one byte instead
of the name), ``h`` even means "a literal name of ``h >> 1`` bytes follows".
A binary format rather than JSON because every byte costs 4/3 of a
character in the link, and links end up in SMS messages and QR codes.

About 600 lines in one module because the encoder and decoder must agree byte for byte: the format, the
well-known identifier table, the nonce supply and the key ring's use are kept side by side.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "InvalidToken",
    "TokenExpired",
    "TokenTooLong",
    "KeySetError",
    "LinkEncoder",
    "LinkKeys",
    "LinkPayload",
    "parse_link_keys",
    "generate_key_entry",
    "encode",
    "decode",
    "MAX_TOKEN_LENGTH",
]

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# Gunicorn's default request-line limit is 4094 bytes ("GET /p/<token>
# HTTP/1.1" must fit), so a longer token would make a link that the server
# refuses.  encode() raises TokenTooLong instead, so the row gets an error.
MAX_TOKEN_LENGTH = 4000
# Bound on the decompressed body: the body is authenticated, so only a key
# holder could make a large one, but a cap keeps decode's memory bounded.
MAX_BODY_BYTES = 64 * 1024
# Below this size deflate rarely saves more than a byte or two and costs
# a few microseconds per link, which matters at a million rows.
COMPRESS_MIN_BYTES = 128

_KEY_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}\Z")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\Z")

_F_DEFLATE = 0x01
_F_EXTERNAL_ID = 0x02
_F_BATCH = 0x04
_F_ROW = 0x08
_F_EXPIRES = 0x10
_F_SINGLE_USE = 0x20
_F_KNOWN = _F_DEFLATE | _F_EXTERNAL_ID | _F_BATCH | _F_ROW | _F_EXPIRES | _F_SINGLE_USE

_UINT_MAX = 2**63 - 1

# Field identifiers common enough to deserve a one-byte code.  Part of the
# version-1 format: append only, never reorder or remove.
_KNOWN_KEYS: tuple[str, ...] = (
    "name",
    "email",
    "phone",
    "firstName",
    "lastName",
    "fullName",
    "displayName",
    "emailAddress",
    "phoneNumber",
    "mobileNumber",
    "mobile",
    "kennitala",
    "ssn",
    "memberId",
    "memberNumber",
    "externalId",
    "birthday",
    "dateOfBirth",
    "company",
    "address",
    "postalCode",
    "city",
    "country",
    "person.displayName",
    "person.forename",
    "person.surname",
    "person.emailAddress",
    "person.mobileNumber",
    "members.member.externalId",
    "members.member.points",
    "members.tier.name",
)
# key -> the already-encoded varint header for it (all codes fit in one byte)
_KNOWN_KEY_HEADER: dict[str, bytes] = {key: bytes(((index << 1) | 1,)) for index, key in enumerate(_KNOWN_KEYS)}


class InvalidToken(Exception):
    """The one exception for every decode failure (bad base64, unknown key,
    tag mismatch, bad payload, expired); its message is for logs only."""


class TokenExpired(InvalidToken):
    """An authentic token whose expiry has passed.  A subclass so that callers
    catching InvalidToken need not care, while a view may word it kindly."""


class TokenTooLong(ValueError):
    """encode(): the values do not fit in a link a web server will accept.
    The message is a sentence for staff (a row error in a batch)."""


class KeySetError(ValueError):
    """A malformed SMARTPASS_LINK_KEYS value; the message says what is wrong
    without echoing key material."""


@dataclass(frozen=True)
class LinkKeys:
    """(key_id, 32-byte key) pairs; the first encrypts, all decrypt."""

    # repr=False: the default repr would print the keys into logs and tracebacks.
    keys: tuple[tuple[str, bytes], ...] = field(repr=False)
    # Built once here, so encode/decode never parse keys or build ciphers.
    _header: bytes = field(init=False, repr=False, compare=False)
    _encryptor: AESGCM = field(init=False, repr=False, compare=False)
    _decryptors: dict[bytes, AESGCM] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple((str(key_id), bytes(key)) for key_id, key in self.keys)
        if not keys:
            raise KeySetError("At least one link key is needed.")
        decryptors: dict[bytes, AESGCM] = {}
        for position, (key_id, key) in enumerate(keys, start=1):
            if not _KEY_ID_RE.match(key_id):
                raise KeySetError(
                    f"Link key {position}: the key id must be 1-16 characters of A-Z, a-z, 0-9, '_' or '-'."
                )
            if len(key) != KEY_BYTES:
                raise KeySetError(
                    f"Link key {position} ({key_id!r}) is {len(key)} bytes; it must be exactly {KEY_BYTES} bytes."
                )
            id_bytes = key_id.encode("ascii")
            if id_bytes in decryptors:
                raise KeySetError(f"The link key id {key_id!r} is used more than once.")
            decryptors[id_bytes] = AESGCM(key)
        first_id = keys[0][0].encode("ascii")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_header", bytes((VERSION, len(first_id))) + first_id)
        object.__setattr__(self, "_encryptor", decryptors[first_id])
        object.__setattr__(self, "_decryptors", decryptors)

    def __repr__(self) -> str:
        return f"LinkKeys(ids={self.key_ids!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self.keys)

    @property
    def current_key_id(self) -> str:
        """The id that new tokens are encrypted with."""
        return self.keys[0][0]


def _decode_key(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None if it is not base64."""
    normalised = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_link_keys(value: str) -> LinkKeys:
    """Parse ``"id:base64key,id2:base64key2"`` (whitespace around entries is
    ignored).  Errors name the entry by position (and its id once the id is
    known to be well-formed) but never repeat what was given as a key: an
    entry written the wrong way round would otherwise print a key."""
    if not value or not value.strip():
        raise KeySetError(
            "SMARTPASS_LINK_KEYS is empty; it needs one or more 'id:base64key' "
            "entries separated by commas (manage.py generate_link_key prints one)."
        )
    pairs: list[tuple[str, bytes]] = []
    for position, entry in enumerate(value.split(","), start=1):
        entry = entry.strip()
        if not entry:
            raise KeySetError(f"SMARTPASS_LINK_KEYS entry {position} is empty (a stray comma?).")
        key_id, colon, key_text = entry.partition(":")
        key_id, key_text = key_id.strip(), key_text.strip()
        if not colon:
            raise KeySetError(f"SMARTPASS_LINK_KEYS entry {position} has no ':' between key id and key.")
        if not _KEY_ID_RE.match(key_id):
            raise KeySetError(
                f"SMARTPASS_LINK_KEYS entry {position}: the key id must be 1-16 "
                "characters of A-Z, a-z, 0-9, '_' or '-'."
            )
        key = _decode_key(key_text)
        if key is None:
            raise KeySetError(f"SMARTPASS_LINK_KEYS entry {position} ({key_id!r}): the key is not valid base64.")
        if len(key) != KEY_BYTES:
            raise KeySetError(
                f"SMARTPASS_LINK_KEYS entry {position} ({key_id!r}): the key decodes to "
                f"{len(key)} bytes; it must be exactly {KEY_BYTES} bytes."
            )
        if any(key_id == seen for seen, _ in pairs):
            raise KeySetError(f"SMARTPASS_LINK_KEYS uses the key id {key_id!r} more than once.")
        pairs.append((key_id, key))
    return LinkKeys(tuple(pairs))


def generate_key_entry(key_id: str | None = None) -> str:
    """A new ``id:base64key`` entry for SMARTPASS_LINK_KEYS.  The default id
    is the UTC date, which tells operators how old a key is when rotating."""
    if key_id is None:
        key_id = datetime.now(UTC).strftime("k%Y%m%d")
    if not _KEY_ID_RE.match(key_id):
        raise KeySetError("A key id must be 1-16 characters of A-Z, a-z, 0-9, '_' or '-'.")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


@dataclass(frozen=True)
class LinkPayload:
    template_id: uuid.UUID
    fields: dict[str, str]  # values by template input-field identifier
    external_id: str | None = None
    batch_id: int | None = None
    row: int | None = None  # 1-based data row number in the uploaded file
    # Aware; stored with one-second precision (floored), decoded as UTC.
    expires_at: datetime | None = None
    # One pass per (batch, row): set only together with batch_id and row.
    single_use: bool = False


# --- encoding ---------------------------------------------------------------


def _put_uint(out: bytearray, number: int) -> None:
    # LEB128: 7 bits per byte, high bit set on all but the last byte.
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _put_str(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    _put_uint(out, len(data))
    out += data


def _check_uint(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= _UINT_MAX:
        raise ValueError(f"{name} must be between 0 and {_UINT_MAX}")
    return value


_URLSAFE = bytes.maketrans(b"+/", b"-_")
# Characters autolinkers drop from the end of a link: no token ends in one (see LinkEncoder.encode).
_DROPPED_LAST = frozenset("-_.")


def _b64url(raw: bytes) -> str:
    # base64.urlsafe_b64encode without its two extra Python-level calls.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _deflate(data: bytes) -> bytes:
    # Raw deflate (no zlib header or checksum: GCM already authenticates) with
    # a 1 KiB window and small memLevel: a token body is at most a few KiB,
    # and the small state makes the per-call set-up ~10x cheaper than defaults.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -10, 2)
    return compressor.compress(data) + compressor.flush()


class _Nonces:
    """Random nonces taken from one os.urandom call per few thousand links: a system call per link would cost
    more than the encryption. Random 96-bit nonces as before, from the same source. Two links must never get
    the same nonce: each pool's nonces are cut once into a list and handed out by list.pop(), which one thread
    at a time does whole (no lock per link: taking and releasing one cost more than the encryption's set-up);
    a thread finding the list empty makes a new one from a new urandom call. The list is emptied in a forked
    child, so a parent and its children never hand out the same bytes."""

    POOL_NONCES = 4096

    def __init__(self) -> None:
        self.forget()

    def take(self) -> bytes:
        try:
            return self.nonces.pop()
        except IndexError:
            pool = os.urandom(NONCE_BYTES * self.POOL_NONCES)
            nonces = [pool[start : start + NONCE_BYTES] for start in range(0, len(pool), NONCE_BYTES)]
            nonce = nonces.pop()
            self.nonces = nonces  # another thread's new list may be replaced: its nonces are simply not used
            return nonce

    def forget(self) -> None:
        self.nonces: list[bytes] = []


_NONCES = _Nonces()
os.register_at_fork(after_in_child=_NONCES.forget)


def encode(payload: LinkPayload, keys: LinkKeys) -> str:
    """Encrypt ``payload`` under the first key of ``keys``.

    Raises TypeError/ValueError for a malformed payload (a programming
    error) and TokenTooLong when the values cannot fit in a usable link.
    """
    encoder = LinkEncoder(
        keys,
        template_id=payload.template_id,
        batch_id=payload.batch_id,
        expires_at=payload.expires_at,
        single_use=payload.single_use,
    )
    return encoder.encode(payload.fields, row=payload.row, external_id=payload.external_id)


class LinkEncoder:
    """encode() for many links that share a template, a batch and an expiry (the rows of a batch): what they
    share is checked and packed once, and no LinkPayload is built per link."""

    __slots__ = ("_keys", "_template", "_flags", "_batch", "_expires", "_single_use", "_heads")

    def __init__(
        self,
        keys: LinkKeys,
        *,
        template_id: uuid.UUID,
        batch_id: int | None = None,
        expires_at: datetime | None = None,
        single_use: bool = False,
    ) -> None:
        if not isinstance(template_id, uuid.UUID):
            raise TypeError("template_id must be a uuid.UUID")
        if single_use and batch_id is None:
            raise ValueError("a single-use link needs batch_id and row")
        self._keys = keys
        self._single_use = single_use
        self._template = template_id.bytes
        flags = 0
        batch = bytearray()
        if batch_id is not None:
            flags |= _F_BATCH
            _put_uint(batch, _check_uint("batch_id", batch_id))
        expires = bytearray()
        if expires_at is not None:
            if not isinstance(expires_at, datetime) or expires_at.utcoffset() is None:
                raise ValueError("expires_at must be an aware datetime")
            flags |= _F_EXPIRES
            # int() truncates toward zero, which is a floor for post-1970 values.
            _put_uint(expires, _check_uint("expires_at", int(expires_at.timestamp())))
        if single_use:
            flags |= _F_SINGLE_USE
        self._flags = flags
        # The plaintext's first 17 bytes for every value the flags byte can take: flags, then the template.
        self._heads = [bytes((value,)) + self._template for value in range(256)]
        self._batch = bytes(batch)
        self._expires = bytes(expires)

    def encode(self, fields: dict[str, str], *, row: int | None = None, external_id: str | None = None) -> str:
        """The token for one link: ``fields`` by identifier, its row and explicit External ID, if any."""
        flags = self._flags
        # The body's order is fixed by the format: batch, row, expiry, External ID, fields.
        body = bytearray(self._batch)
        if row is None and self._single_use:
            raise ValueError("a single-use link needs batch_id and row")
        if row is not None:
            flags |= _F_ROW
            if type(row) is int and 0 <= row < 0x200000:  # fast path: row numbers of up to three varint bytes
                if row < 0x80:
                    body.append(row)
                elif row < 0x4000:
                    body += bytes(((row & 0x7F) | 0x80, row >> 7))
                else:
                    body += bytes(((row & 0x7F) | 0x80, ((row >> 7) & 0x7F) | 0x80, row >> 14))
            else:
                _put_uint(body, _check_uint("row", row))
        body += self._expires
        if external_id is not None:
            if not isinstance(external_id, str):
                raise TypeError("external_id must be a str")
            flags |= _F_EXTERNAL_ID
            _put_str(body, external_id)
        # The loop below runs once per field per link (millions of times), so it
        # inlines the one-byte varint case instead of calling _put_uint/_put_str.
        known = _KNOWN_KEY_HEADER
        for key, value in fields.items():
            if type(key) is not str or type(value) is not str:
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError("fields must map str to str")
            header = known.get(key)
            if header is not None:
                body += header
            else:
                key_bytes = key.encode("utf-8")
                _put_uint(body, len(key_bytes) << 1)
                body += key_bytes
            value_bytes = value.encode("utf-8")
            if len(value_bytes) < 0x80:
                body.append(len(value_bytes))
            else:
                _put_uint(body, len(value_bytes))
            body += value_bytes

        if len(body) > MAX_BODY_BYTES:
            raise TokenTooLong("The values in this row are too long to fit in a link.")
        packed = body
        if len(body) >= COMPRESS_MIN_BYTES:
            deflated = _deflate(bytes(body))
            if len(deflated) < len(body):
                packed = bytearray(deflated)
                flags |= _F_DEFLATE

        packed[0:0] = self._heads[flags]  # flags and template in front, without copying the body twice
        keys = self._keys
        header = keys._header
        while True:
            nonce = _NONCES.take()
            raw = header + nonce + keys._encryptor.encrypt(nonce, packed, header)
            token = binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")
            # Autolinkers (Markdown, GFM, mail clients) leave a trailing "-" or "_" out of the link they make,
            # and the holder gets a 404. Only a token of a whole number of 3-byte groups can end so (1 in 32 of
            # them): it is encrypted again under a fresh nonce, the same payload, and decode() is unchanged.
            if token[-1] not in _DROPPED_LAST:
                break
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenTooLong("The values in this row are too long to fit in a link.")
        return token


# --- decoding ---------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over the decrypted body."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def uint(self) -> int:
        result = 0
        shift = 0
        while True:
            if self.pos >= len(self.data):
                raise InvalidToken("payload: truncated number")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise InvalidToken("payload: number too long")
        if result > _UINT_MAX:
            raise InvalidToken("payload: number out of range")
        return result

    def take(self, length: int) -> bytes:
        end = self.pos + length
        if end > len(self.data):
            raise InvalidToken("payload: truncated string")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def text(self, length: int) -> str:
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidToken("payload: bad UTF-8") from None


def _inflate(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(-15)
    try:
        result = decompressor.decompress(data, MAX_BODY_BYTES)
    except zlib.error:
        raise InvalidToken("payload: bad deflate data") from None
    if decompressor.unconsumed_tail or not decompressor.eof or decompressor.unused_data:
        raise InvalidToken("payload: deflate data too long or incomplete")
    return result


def _parse_plaintext(plaintext: bytes) -> LinkPayload:
    if len(plaintext) < 17:
        raise InvalidToken("payload: too short")
    flags = plaintext[0]
    if flags & ~_F_KNOWN:
        raise InvalidToken("payload: unknown flags")
    if flags & _F_SINGLE_USE and not (flags & _F_BATCH and flags & _F_ROW):
        raise InvalidToken("payload: single use without batch and row")
    template_id = uuid.UUID(bytes=plaintext[1:17])
    body = plaintext[17:]
    if flags & _F_DEFLATE:
        body = _inflate(body)
    reader = _Reader(body)
    batch_id = reader.uint() if flags & _F_BATCH else None
    row = reader.uint() if flags & _F_ROW else None
    expires_at = None
    if flags & _F_EXPIRES:
        seconds = reader.uint()
        try:
            expires_at = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidToken("payload: expiry out of range") from None
    external_id = reader.text(reader.uint()) if flags & _F_EXTERNAL_ID else None
    fields: dict[str, str] = {}
    while not reader.at_end():
        header = reader.uint()
        if header & 1:
            index = header >> 1
            if index >= len(_KNOWN_KEYS):
                raise InvalidToken("payload: unknown key code")
            key = _KNOWN_KEYS[index]
        else:
            key = reader.text(header >> 1)
        if key in fields:
            raise InvalidToken("payload: duplicate field")
        fields[key] = reader.text(reader.uint())
    return LinkPayload(
        template_id=template_id,
        fields=fields,
        external_id=external_id,
        batch_id=batch_id,
        row=row,
        expires_at=expires_at,
        single_use=bool(flags & _F_SINGLE_USE),
    )


def decode(token: str, keys: LinkKeys, *, now: datetime | None = None) -> LinkPayload:
    """Check and decrypt ``token``.  Every failure raises InvalidToken (or its
    subclass TokenExpired) with a short reason for logs that repeats nothing
    from the token.  ``now`` (aware) defaults to the current UTC time."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _TOKEN_RE.match(token):
        raise InvalidToken("not base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("bad base64url length") from None
    # Several strings decode to the same bytes (unused low bits of the last
    # character); accept only the one encode() makes, so a link has one form.
    if _b64url(raw) != token:
        raise InvalidToken("non-canonical base64url")
    if len(raw) < 2 or raw[0] != VERSION:
        raise InvalidToken("unknown version")
    id_length = raw[1]
    header_end = 2 + id_length
    if not 1 <= id_length <= 16 or len(raw) < header_end + NONCE_BYTES + TAG_BYTES:
        raise InvalidToken("truncated")
    aead = keys._decryptors.get(raw[2:header_end])
    if aead is None:
        raise InvalidToken("unknown key id")
    nonce_end = header_end + NONCE_BYTES
    try:
        plaintext = aead.decrypt(raw[header_end:nonce_end], raw[nonce_end:], raw[:header_end])
    except InvalidTag:
        raise InvalidToken("authentication failed") from None
    payload = _parse_plaintext(plaintext)
    if payload.expires_at is not None:
        if now is None:
            now = datetime.now(UTC)
        elif now.utcoffset() is None:
            raise ValueError("now must be an aware datetime")
        if payload.expires_at <= now:
            raise TokenExpired("expired")
    return payload
