"""A template's row in the mirror, made from its API object: cleaned to fit every column, fingerprinted."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

import orjson
from django.utils.dateparse import parse_datetime

from ..models import PassTemplate, is_input_field

logger = logging.getLogger(__name__)


class TemplateRow(NamedTuple):
    """A template's row: the columns that come from its API object, in this order (see _mirror_row): its id,
    texts, flags, then the rest. The other columns are the page's: changed_at and first_seen_at are when it was
    read, removed_at is empty. Texts hold no NUL byte (_mirror_row removes them)."""

    id: str
    type: str
    name: str
    description: str
    status: str
    delivery_page_url: str
    disable_issue: bool
    pos_distribution_only: bool
    lock_input_fields: bool
    deliver_by_kennitala: bool
    use_email_domain_verification: bool
    has_dynamic_barcode: bool
    supports_google_wallet: bool
    stamps: int | None
    pass_price: Decimal | None
    kennitala_age_verification: int | None
    when_last_update_sent: datetime | None
    content_hash: str
    raw: bytes  # the API object as JSON text, last: COPY takes it as it is, backslashes doubled


_TEMPLATE_ROW = TemplateRow._fields
# Columns rewritten when a template's content changes (everything but id and first_seen_at).
_UPDATE_FIELDS = [*_TEMPLATE_ROW[1:], "changed_at", "removed_at"]


class InvalidTemplate(ValueError):
    """An upstream template object the mirror cannot store (no usable id, an unreadable price …)."""


# Integer columns hold 32-bit values on every database Django supports.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_PRICE_MAX = Decimal("999999999999.99")  # pass_price: 14 digits, 2 after the point
_TEXT_LIMITS = {f.name: f.max_length for f in PassTemplate._meta.fields if f.max_length}


def content_hash(item: dict) -> str:
    """A fingerprint of one API object, to skip unchanged templates without touching their rows."""
    return _fingerprint(item)[0]


def _fingerprint(item: dict) -> tuple[str, bytes]:
    """(content hash, the object as canonical JSON text).

    orjson with sorted keys is canonical and about eight times faster than json.dumps; hashing is most of
    an unchanged re-sync's own work. The same text is what `raw` stores, so a new template is serialised
    once.
    """
    dumped = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(dumped).hexdigest(), dumped


def _text(value, *, limit: int | None = None) -> str:
    """A string every text column accepts: NUL bytes (which PostgreSQL refuses) removed, cut to `limit`."""
    text = "" if value is None else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if limit is None else text[:limit]


def _without_nul(value):
    """`value` with NUL bytes removed from every string in it, keys included (PostgreSQL refuses them in text,
    and `raw` should say what the columns hold)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _fit(value, limit: int | None) -> str:
    """_text for a value known to hold no NUL byte: a string is only cut to `limit`."""
    return (value if type(value) is str else _text(value))[:limit]


def _clamped_int(value) -> int | None:
    """A number for an integer column: out-of-range values are held at the column's bounds (the exact
    value stays in `raw`). Raises ValueError/TypeError when it is not a number at all."""
    if value is None:
        return None
    try:
        number = int(value)
    except OverflowError:  # an infinite float
        number = _INT_MAX if value > 0 else _INT_MIN
    return max(_INT_MIN, min(_INT_MAX, number))


def _clamped_price(value) -> Decimal | None:
    """A price held within the column: a price too large to store is still a price, so the template
    stays refused for free links (see PassTemplate.issue_refusal_reason)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("a price cannot be true or false")
    price = Decimal(str(value))
    if price.is_nan():
        raise ValueError("the price is not a number")
    return max(-_PRICE_MAX, min(_PRICE_MAX, price))


def _when(value) -> datetime | None:
    # Informational only: an unreadable date is left empty (the exact text stays in `raw`).
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_id(item) -> str | None:
    """The template id as the mirror stores it (an upper-case id upstream is the same template), or None."""
    try:
        raw = item["id"]
    except (TypeError, KeyError, IndexError):
        return None
    if type(raw) is str and _CANONICAL_UUID.fullmatch(raw):
        return raw  # as SmartPages writes ids: a fifth of the time uuid.UUID would take
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        return None


def _mirror_row(item, *, template_id: str | None, digest: str, dumped: bytes) -> tuple:
    """The template's row (see _TEMPLATE_ROW) for one API object, its canonical id (see _canonical_id) and
    its fingerprint.

    What does not fit a column is made to fit (NUL bytes removed, text cut to the column's length,
    numbers held at the column's bounds); an object the mirror cannot store at all raises InvalidTemplate.
    """
    if not isinstance(item, dict):
        raise InvalidTemplate(f"SmartPages sent a list item that is not a template object ({_text(item)[:40]!r}).")
    if template_id is None:
        raise InvalidTemplate(f"SmartPages sent a template without a usable id ({_text(item.get('id'))[:40]!r}).")
    if b"\\u0000" in dumped:  # a NUL byte somewhere: PostgreSQL refuses it in text
        item = _without_nul(item)
        dumped = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    numbers = []
    for key, read in (
        ("stamps", _clamped_int),
        ("kennitalaAgeVerification", _clamped_int),
        ("passPrice", _clamped_price),
    ):
        try:
            numbers.append(read(item.get(key)))
        except (TypeError, ValueError, InvalidOperation) as exc:
            shown = _text(item.get(key))[:40]
            raise InvalidTemplate(f"Template {template_id} has a {key} the mirror cannot read ({shown!r}).") from exc
    stamps, age, price = numbers
    get = item.get
    limits = _TEXT_LIMITS
    row = TemplateRow(  # NUL bytes are gone (see above)
        template_id,
        _fit(get("type"), limits["type"]),
        _fit(get("name"), limits["name"]),
        _fit(get("description"), None),
        _fit(get("status"), limits["status"]),
        _fit(get("deliveryPageUrl"), limits["delivery_page_url"]),
        bool(get("disableIssue")),
        bool(get("posDistributionOnly")),
        bool(get("lockInputFields")),
        bool(get("deliverByKennitala")),
        bool(get("useEmailDomainVerification")),
        bool(get("hasDynamicBarcode")),
        bool(get("supportsGoogleWallet")),
        stamps,
        price,
        age,
        _when(get("whenLastUpdateSent")),
        digest,
        dumped,
    )
    _check_input_fields(template_id, get("inputFields"))
    return row


def _check_input_fields(template_id: str, fields) -> None:
    """Refuse a template whose input fields the portal could not ask for (PassTemplate.input_fields reads
    them from `raw`)."""
    if not fields:
        return
    if not isinstance(fields, list):
        raise InvalidTemplate(f"Template {template_id} has input fields that are not a list.")
    if not all(map(is_input_field, fields)):
        raise InvalidTemplate(f"Template {template_id} has an input field without an identifier.")
