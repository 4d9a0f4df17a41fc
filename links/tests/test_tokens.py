"""SmartPass link tokens: round trips, tampering, rotation, expiry, key parsing.

Pure Python: no Django settings, no database.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from links.tokens import (
    MAX_TOKEN_LENGTH,
    InvalidToken,
    KeySetError,
    LinkEncoder,
    LinkKeys,
    LinkPayload,
    TokenExpired,
    TokenTooLong,
    decode,
    encode,
    generate_key_entry,
    parse_link_keys,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEYS = LinkKeys((("k1", KEY_A),))
TEMPLATE = uuid.UUID("5f0c2b7e-8a51-4c1e-9d3b-2a6f4e8c1d90")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE_URL = "https://portal.example.is/p/"


def b64url_decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def typical_payload(**overrides: object) -> LinkPayload:
    values: dict[str, object] = {
        "template_id": TEMPLATE,
        "fields": {
            "name": "Laura Loopy",
            "email": "laura.loopy@example.com",
            "phone": "+3545551234",
        },
        "batch_id": 12345,
        "row": 99999,
    }
    values.update(overrides)
    return LinkPayload(**values)  # type: ignore[arg-type]


def rich_token() -> str:
    """A token that uses every part of the format, for the tampering tests."""
    payload = typical_payload(
        external_id="laura.loopy@example.com",
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )
    return encode(payload, KEYS)


# --- round trips --------------------------------------------------------------

field_keys = st.one_of(
    st.sampled_from(["name", "email", "phone", "person.emailAddress", "kennitala"]),
    st.text(max_size=30),
)
field_values = st.one_of(st.text(max_size=40), st.text(max_size=400))
expiries = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)).map(
    lambda moment: moment.replace(microsecond=0)
)
optional_uint = st.none() | st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=300)
@given(
    template_id=st.uuids(),
    fields=st.dictionaries(field_keys, field_values, max_size=8),
    external_id=st.none() | st.text(max_size=60),
    batch_id=optional_uint,
    row=optional_uint,
    expires_at=st.none() | expiries,
    single_use=st.booleans(),
)
def test_a_token_decodes_to_exactly_the_payload_it_was_made_from(
    template_id: uuid.UUID,
    fields: dict[str, str],
    external_id: str | None,
    batch_id: int | None,
    row: int | None,
    expires_at: datetime | None,
    single_use: bool,
) -> None:
    single_use = single_use and batch_id is not None and row is not None  # the flag needs both
    payload = LinkPayload(template_id, fields, external_id, batch_id, row, expires_at, single_use)
    try:
        token = encode(payload, KEYS)
    except TokenTooLong:
        # Only values that cannot fit a 4000-character link may be refused.
        size = sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())
        assert size > 2000
        return
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert decode(token, KEYS, now=EPOCH) == payload


def test_one_encoder_makes_the_links_of_many_rows_each_decoding_to_its_own_row() -> None:
    expires = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)
    encoder = LinkEncoder(KEYS, template_id=TEMPLATE, batch_id=77, expires_at=expires)
    rows = [(1, {"name": "Anna"}, None), (200, {}, "CUST-2"), (70_000, {"name": "Jón", "custom.x": "y"}, "")]
    for row, fields, external_id in rows:
        token = encoder.encode(fields, row=row, external_id=external_id)
        assert decode(token, KEYS, now=EPOCH) == LinkPayload(TEMPLATE, fields, external_id, 77, row, expires)


def test_two_tokens_for_the_same_payload_differ_because_the_nonce_is_random() -> None:
    payload = typical_payload()
    assert encode(payload, KEYS) != encode(payload, KEYS)


def test_long_repetitive_values_are_compressed_into_a_short_token() -> None:
    payload = LinkPayload(TEMPLATE, {"note": "Gleðileg jól! " * 300})
    token = encode(payload, KEYS)
    assert len(token) < 400
    assert decode(token, KEYS) == payload


def test_values_too_long_for_a_link_raise_token_too_long() -> None:
    payload = LinkPayload(TEMPLATE, {"note": os.urandom(4000).hex()})
    with pytest.raises(TokenTooLong, match="too long"):
        encode(payload, KEYS)


def test_an_empty_field_dict_and_empty_strings_round_trip() -> None:
    for payload in (
        LinkPayload(TEMPLATE, {}),
        LinkPayload(TEMPLATE, {"": ""}, external_id=""),
        LinkPayload(TEMPLATE, {"name": ""}, batch_id=0, row=0),
    ):
        assert decode(encode(payload, KEYS), KEYS) == payload


def test_an_expiry_keeps_whole_seconds_and_comes_back_in_utc() -> None:
    reykjavik_noon = datetime(2030, 6, 1, 12, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=-1)))
    decoded = decode(encode(LinkPayload(TEMPLATE, {}, expires_at=reykjavik_noon), KEYS), KEYS)
    assert decoded.expires_at == datetime(2030, 6, 1, 13, 0, 0, tzinfo=UTC)
    assert decoded.expires_at.tzinfo == UTC


def test_a_payload_of_the_wrong_types_is_refused_when_encoding() -> None:
    with pytest.raises(TypeError):
        encode(LinkPayload(TEMPLATE, {"name": 5}), KEYS)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        encode(LinkPayload(str(TEMPLATE), {}), KEYS)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode(LinkPayload(TEMPLATE, {}, row=-1), KEYS)
    with pytest.raises(ValueError):
        encode(LinkPayload(TEMPLATE, {}, expires_at=datetime(2030, 1, 1)), KEYS)


# --- link length --------------------------------------------------------------


def test_a_link_for_a_typical_row_is_well_under_200_characters() -> None:
    keys = parse_link_keys(generate_key_entry())  # realistic 9-character key id
    url = BASE_URL + encode(typical_payload(), keys)
    with_expiry = BASE_URL + encode(typical_payload(expires_at=datetime(2027, 12, 31, tzinfo=UTC)), keys)
    print(f"typical link: {len(url)} characters; with an expiry: {len(with_expiry)}")
    assert len(url) <= 180
    assert len(with_expiry) <= 190


# --- tampering ----------------------------------------------------------------


def test_every_single_bit_flip_is_rejected() -> None:
    raw = b64url_decode(rich_token())
    for index in range(len(raw)):
        for bit in range(8):
            tampered = bytearray(raw)
            tampered[index] ^= 1 << bit
            with pytest.raises(InvalidToken):
                decode(b64url_encode(bytes(tampered)), KEYS, now=EPOCH)


def test_every_truncation_is_rejected() -> None:
    token = rich_token()
    raw = b64url_decode(token)
    for length in range(len(raw)):
        with pytest.raises(InvalidToken):
            decode(b64url_encode(raw[:length]), KEYS, now=EPOCH)
    for length in range(len(token)):
        with pytest.raises(InvalidToken):
            decode(token[:length], KEYS, now=EPOCH)


def test_extra_bytes_after_a_valid_token_are_rejected() -> None:
    raw = b64url_decode(rich_token())
    with pytest.raises(InvalidToken):
        decode(b64url_encode(raw + b"\x00"), KEYS, now=EPOCH)


@pytest.mark.parametrize("bad", ["+", "/", "=", " ", ".", "\n", "é", "%2B"])
def test_any_character_outside_base64url_is_rejected(bad: str) -> None:
    token = rich_token()
    for position in (0, len(token) // 2, len(token)):
        with pytest.raises(InvalidToken):
            decode(token[:position] + bad + token[position:], KEYS, now=EPOCH)


def test_a_token_whose_last_character_has_stray_low_bits_is_rejected() -> None:
    token = rich_token()
    if len(token) % 4 == 0:  # no spare bits in this length; add a byte's worth
        pytest.skip("token length leaves no unused bits")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    variant = token[:-1] + alphabet[last ^ 1]
    assert b64url_decode(variant) == b64url_decode(token)  # same bytes...
    with pytest.raises(InvalidToken):  # ...but not the canonical spelling
        decode(variant, KEYS, now=EPOCH)


def test_a_token_with_another_version_byte_is_rejected() -> None:
    raw = bytearray(b64url_decode(rich_token()))
    raw[0] = 2
    with pytest.raises(InvalidToken, match="version"):
        decode(b64url_encode(bytes(raw)), KEYS, now=EPOCH)


def test_a_token_made_with_another_key_set_is_rejected() -> None:
    payload = typical_payload()
    same_id_other_key = LinkKeys((("k1", KEY_B),))
    other_id = LinkKeys((("k2", KEY_B),))
    for foreign in (same_id_other_key, other_id):
        with pytest.raises(InvalidToken):
            decode(encode(payload, foreign), KEYS)


def test_non_string_input_is_rejected_as_an_invalid_token() -> None:
    with pytest.raises(InvalidToken):
        decode(b"AQJrMQ", KEYS)  # type: ignore[arg-type]
    with pytest.raises(InvalidToken):
        decode("A" * (MAX_TOKEN_LENGTH + 1), KEYS)


def _sealed(plaintext: bytes, key_id: bytes = b"k1", key: bytes = KEY_A) -> str:
    """A correctly encrypted and authenticated token around any plaintext."""
    header = bytes((1, len(key_id))) + key_id
    nonce = os.urandom(12)
    return b64url_encode(header + nonce + AESGCM(key).encrypt(nonce, plaintext, header))


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"\x00" + TEMPLATE.bytes[:10],  # shorter than flags + UUID
        b"\x80" + TEMPLATE.bytes,  # unknown flag bit
        b"\x00" + TEMPLATE.bytes + b"\x02\xff\xfe\x02ab",  # key that is not UTF-8
        b"\x00" + TEMPLATE.bytes + b"\x02ab\x09abc",  # value runs past the end
        b"\x00" + TEMPLATE.bytes + b"\x7f\x00",  # unknown well-known-key code
        b"\x00" + TEMPLATE.bytes + b"\x02a\x00\x02a\x00",  # the same key twice
        b"\x04" + TEMPLATE.bytes + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # huge number
        b"\x10" + TEMPLATE.bytes + b"\xff\xff\xff\xff\xff\xff\xff\x7f",  # expiry past year 9999
        b"\x01" + TEMPLATE.bytes + b"not deflate data",
        b"\x24" + TEMPLATE.bytes + b"\x07",  # single use with a batch but no row
    ],
)
def test_an_authentic_token_whose_payload_does_not_parse_is_rejected(plaintext: bytes) -> None:
    with pytest.raises(InvalidToken):
        decode(_sealed(plaintext), KEYS, now=EPOCH)


def test_decode_error_messages_repeat_nothing_from_the_token() -> None:
    token = rich_token()
    raw = bytearray(b64url_decode(token))
    raw[-1] ^= 1
    with pytest.raises(InvalidToken) as caught:
        decode(b64url_encode(bytes(raw)), KEYS)
    assert "k1" not in str(caught.value)
    assert token[:8] not in str(caught.value)
    assert caught.value.__cause__ is None


# --- rotation -----------------------------------------------------------------


def test_a_token_from_the_old_key_still_decodes_after_a_new_key_is_put_in_front() -> None:
    old_entry = generate_key_entry("old")
    new_entry = generate_key_entry("new")
    old_keys = parse_link_keys(old_entry)
    rotated = parse_link_keys(f"{new_entry},{old_entry}")
    payload = typical_payload()

    old_token = encode(payload, old_keys)
    assert decode(old_token, rotated) == payload

    new_token = encode(payload, rotated)
    raw = b64url_decode(new_token)
    assert raw[2 : 2 + raw[1]] == b"new"
    assert rotated.current_key_id == "new"
    assert decode(new_token, rotated) == payload
    with pytest.raises(InvalidToken):
        decode(new_token, old_keys)  # servers not yet rotated refuse it


def test_a_token_stops_working_once_its_key_is_removed() -> None:
    token = encode(typical_payload(), LinkKeys((("old", KEY_A), ("new", KEY_B))))
    with pytest.raises(InvalidToken):
        decode(token, LinkKeys((("new", KEY_B),)))


# --- expiry -------------------------------------------------------------------


def test_an_expired_token_is_rejected() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    token = encode(typical_payload(expires_at=expires), KEYS)
    assert decode(token, KEYS, now=expires - timedelta(seconds=1)).expires_at == expires
    for now in (expires, expires + timedelta(days=1)):
        with pytest.raises(InvalidToken):
            decode(token, KEYS, now=now)
    with pytest.raises(TokenExpired):
        decode(token, KEYS, now=expires)


def test_expiry_is_checked_against_the_clock_when_no_time_is_given() -> None:
    past = encode(typical_payload(expires_at=datetime.now(UTC) - timedelta(hours=1)), KEYS)
    future = encode(typical_payload(expires_at=datetime.now(UTC) + timedelta(hours=1)), KEYS)
    with pytest.raises(InvalidToken):
        decode(past, KEYS)
    assert decode(future, KEYS).fields["name"] == "Laura Loopy"


def test_a_token_without_expiry_never_expires() -> None:
    token = encode(typical_payload(), KEYS)
    assert decode(token, KEYS, now=datetime(9999, 1, 1, tzinfo=UTC)) == typical_payload()


# --- key sets -----------------------------------------------------------------


def test_parse_link_keys_accepts_standard_and_urlsafe_base64_with_or_without_padding() -> None:
    key = bytes([0xFB, 0xFF, 0xBF]) * 10 + b"\xfb\xff"  # encodes with + and /
    standard = base64.b64encode(key).decode()
    assert "+" in standard and "/" in standard and standard.endswith("=")
    urlsafe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    keys = parse_link_keys(f" a:{standard} , b_2-x:{urlsafe} ")
    assert keys.keys == (("a", key), ("b_2-x", key))
    assert keys.key_ids == ("a", "b_2-x")


def test_generate_key_entry_makes_a_dated_id_and_a_fresh_32_byte_key() -> None:
    entry = generate_key_entry()
    assert re.fullmatch(r"k\d{8}:[A-Za-z0-9+/]{43}=", entry)
    ((key_id, key),) = parse_link_keys(entry).keys
    assert re.fullmatch(r"k\d{8}", key_id)
    assert len(key) == 32
    assert generate_key_entry("spare").startswith("spare:")
    assert generate_key_entry("x") != generate_key_entry("x")
    with pytest.raises(KeySetError):
        generate_key_entry("no spaces allowed")


SECRET = base64.b64encode(bytes(range(200, 232))).decode()  # a valid 32-byte key
SHORT_SECRET = base64.b64encode(bytes(range(50, 66))).decode()  # 16 bytes


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (f"k1:{SECRET},", "empty"),
        (f"k1:{SECRET[:-5]}*!?{SECRET[-2:]}", "not valid base64"),
        (f"k1:{SECRET[1:]}", "base64|bytes"),
        (f"k1:{SHORT_SECRET}", "16 bytes"),
        (f"k1:{SECRET},k1:{SECRET}", "more than once"),
        (f"k1{SECRET}", "no ':'"),
        (f"{SECRET}:k1", "key id"),
        (f"this-id-is-far-too-long:{SECRET}", "key id"),
    ],
)
def test_parse_link_keys_errors_say_what_is_wrong_without_echoing_key_material(value: str, problem: str) -> None:
    with pytest.raises(KeySetError, match=problem) as caught:
        parse_link_keys(value)
    message = str(caught.value)
    for secret in (SECRET, SHORT_SECRET):
        for start in range(0, len(secret) - 6):
            assert secret[start : start + 6] not in message
    assert caught.value.__cause__ is None


def test_link_keys_repr_shows_ids_but_never_keys() -> None:
    keys = parse_link_keys(f"k1:{SECRET}")
    assert repr(keys) == "LinkKeys(ids=('k1',))"
    assert SECRET[:8] not in repr(keys) and str(bytes(range(200, 208))) not in repr(keys)


def test_link_keys_refuses_keys_of_the_wrong_length_or_repeated_ids() -> None:
    with pytest.raises(KeySetError):
        LinkKeys(())
    with pytest.raises(KeySetError):
        LinkKeys((("k1", b"short"),))
    with pytest.raises(KeySetError):
        LinkKeys((("k1", KEY_A), ("k1", KEY_B)))
    with pytest.raises(KeySetError):
        LinkKeys((("bad id", KEY_A),))


def test_equal_key_sets_compare_equal_and_hash_alike() -> None:
    assert LinkKeys((("k1", KEY_A),)) == KEYS
    assert hash(LinkKeys((("k1", KEY_A),))) == hash(KEYS)
    assert LinkKeys((("k1", KEY_B),)) != KEYS


def test_the_single_use_flag_round_trips_and_needs_a_batch_and_a_row() -> None:
    payload = typical_payload(batch_id=7, row=3, single_use=True)
    assert decode(encode(payload, KEYS), KEYS, now=EPOCH).single_use is True
    assert decode(encode(typical_payload(batch_id=7, row=3), KEYS), KEYS, now=EPOCH).single_use is False
    with pytest.raises(ValueError, match="batch_id and row"):
        encode(typical_payload(batch_id=None, row=3, single_use=True), KEYS)


def test_no_two_links_get_the_same_nonce_across_threads_and_a_forked_child() -> None:
    # GCM must never see a nonce twice under one key; nonces come from a pool shared by the process's threads.
    encoder = LinkEncoder(KEYS, template_id=TEMPLATE, batch_id=1)

    def nonces(count: int) -> list[bytes]:
        return [_nonce_of(encoder.encode({"email": "a@b.is"}, row=1)) for _ in range(count)]

    with ThreadPoolExecutor(8) as pool:
        taken = [nonce for batch in pool.map(nonces, [3000] * 8) for nonce in batch]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child's nonces go back to the parent through the pipe
        os.close(reader)
        os.write(writer, b"".join(nonces(500)))
        os._exit(0)
    os.close(writer)
    data = b""
    while chunk := os.read(reader, 65536):
        data += chunk
    os.close(reader)
    os.waitpid(child, 0)
    taken += [data[i : i + 12] for i in range(0, len(data), 12)] + nonces(500)
    assert len(taken) == 8 * 3000 + 1000
    assert len(set(taken)) == len(taken)


def _nonce_of(token: str) -> bytes:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return raw[2 + raw[1] : 2 + raw[1] + 12]
