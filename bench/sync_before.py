"""The template sync's page preparation and its json_to_recordset upsert as they were before rows were built
once (commit bab2759), kept for bench/sync.py's "before" row: each template cleaned into a dict of columns, its
JSON serialised twice (fingerprint, then json_to_recordset), each page upserted. Not used by the portal."""

import functools
import hashlib
import uuid
from datetime import datetime
from decimal import InvalidOperation

import orjson
from django.db import connection

from templates_sync.models import PassTemplate, TemplateInputField
from templates_sync.sync import (
    _FIELD_TEXT_LIMITS,
    _TEXT_LIMITS,
    InvalidTemplate,
    PreparedPage,
    _clamped_int,
    _clamped_price,
    _text,
    _when,
    _without_nul,
)


def _fingerprint(item: dict) -> tuple[str, bool]:
    dumped = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(dumped).hexdigest(), b"\\u0000" in dumped


_UPDATE_FIELDS = [
    "type",
    "name",
    "description",
    "status",
    "stamps",
    "pass_price",
    "disable_issue",
    "pos_distribution_only",
    "lock_input_fields",
    "deliver_by_kennitala",
    "use_email_domain_verification",
    "kennitala_age_verification",
    "has_dynamic_barcode",
    "supports_google_wallet",
    "delivery_page_url",
    "when_last_update_sent",
    "raw",
    "content_hash",
    "changed_at",
    "removed_at",
]


_FIELD_UPDATE_COLUMNS = ["position", "label", "description", "is_mandatory", "is_unique", "format", "type"]


def _template_columns(item: dict, *, digest: str, now: datetime, has_nul: bool = False) -> dict:
    """The PassTemplate column values for one API object (every column but first_seen_at).

    What does not fit a column is made to fit (NUL bytes removed, text cut to the column's length,
    numbers held at the column's bounds); an object the mirror cannot store at all raises InvalidTemplate.
    """
    if not isinstance(item, dict):
        raise InvalidTemplate(f"SmartPages sent a list item that is not a template object ({_text(item)[:40]!r}).")
    try:
        template_id = uuid.UUID(str(item["id"]))
    except (KeyError, ValueError) as exc:
        raise InvalidTemplate(
            f"SmartPages sent a template without a usable id ({_text(item.get('id'))[:40]!r})."
        ) from exc
    numbers = {}
    for name, key, read in (
        ("stamps", "stamps", _clamped_int),
        ("kennitala_age_verification", "kennitalaAgeVerification", _clamped_int),
        ("pass_price", "passPrice", _clamped_price),
    ):
        try:
            numbers[name] = read(item.get(key))
        except (TypeError, ValueError, InvalidOperation) as exc:
            shown = _text(item.get(key))[:40]
            raise InvalidTemplate(f"Template {template_id} has a {key} the mirror cannot read ({shown!r}).") from exc
    limits = _TEXT_LIMITS
    return {
        "id": template_id,
        "type": _text(item.get("type"), limit=limits["type"]),
        "name": _text(item.get("name"), limit=limits["name"]),
        "description": _text(item.get("description")),
        "status": _text(item.get("status"), limit=limits["status"]),
        "stamps": numbers["stamps"],
        "pass_price": numbers["pass_price"],
        "disable_issue": bool(item.get("disableIssue")),
        "pos_distribution_only": bool(item.get("posDistributionOnly")),
        "lock_input_fields": bool(item.get("lockInputFields")),
        "deliver_by_kennitala": bool(item.get("deliverByKennitala")),
        "use_email_domain_verification": bool(item.get("useEmailDomainVerification")),
        "kennitala_age_verification": numbers["kennitala_age_verification"],
        "has_dynamic_barcode": bool(item.get("hasDynamicBarcode")),
        "supports_google_wallet": bool(item.get("supportsGoogleWallet")),
        "delivery_page_url": _text(item.get("deliveryPageUrl"), limit=limits["delivery_page_url"]),
        "when_last_update_sent": _when(item.get("whenLastUpdateSent")),
        "raw": _without_nul(item) if has_nul else item,
        "content_hash": digest,
        "changed_at": now,
        "removed_at": None,
    }


def _input_field_columns(template_id: uuid.UUID, item: dict) -> list[dict]:
    fields = item.get("inputFields") or []
    if not isinstance(fields, list):
        raise InvalidTemplate(f"Template {template_id} has input fields that are not a list.")
    rows, identifiers, limits = [], set(), _FIELD_TEXT_LIMITS
    for position, entry in enumerate(fields):
        if not isinstance(entry, dict) or entry.get("identifier") is None:
            raise InvalidTemplate(f"Template {template_id} has an input field without an identifier.")
        identifier = _text(entry["identifier"], limit=limits["identifier"])
        if identifier in identifiers:
            continue  # identifiers are unique per template; a repeat is kept in `raw` only
        identifiers.add(identifier)
        rows.append(
            {
                "template_id": template_id,
                "position": position,
                "identifier": identifier,
                "label": _text(entry.get("label"), limit=limits["label"]),
                "description": _text(entry.get("description")),
                "is_mandatory": bool(entry.get("isMandatory")),
                "is_unique": bool(entry.get("isUnique")),
                "format": _text(entry.get("format"), limit=limits["format"]),
                "type": _text(entry.get("type"), limit=limits["type"]),
            }
        )
    return rows


def _upsert_with_postgresql(templates: list[dict], fields: list[dict], *, replaced: list[str], now: datetime) -> None:
    """Each page sent as one JSON document that PostgreSQL unpacks (json_to_recordset): building model
    instances and per-value parameters cost about ten times the fetch of the page itself."""
    template_sql, field_sql = _postgresql_statements()
    with connection.cursor() as cursor:
        cursor.execute(template_sql, [now, _json_text(templates)])
        if replaced:
            # The id list goes as one JSON text too: psycopg adapts a list of UUIDs element by element.
            cursor.execute(
                f"DELETE FROM {TemplateInputField._meta.db_table} "
                "WHERE template_id IN (SELECT value::uuid FROM json_array_elements_text(%s::json))",
                [orjson.dumps(replaced).decode()],
            )
        if fields:
            cursor.execute(field_sql, [_json_text(fields)])


def _json_text(value) -> str:
    # orjson writes UUIDs and datetimes itself; Decimal prices go as strings, which PostgreSQL casts.
    return orjson.dumps(value, default=str).decode()


@functools.cache
def _postgresql_statements() -> tuple[str, str]:
    """INSERT … SELECT FROM json_to_recordset statements built from the models' own columns."""

    def insert(model, columns: list[str], *, extra: str = "", conflict: str = "") -> str:
        fields = [model._meta.get_field(name) for name in columns]
        record = ", ".join(f"{f.column} {f.db_type(connection)}" for f in fields)
        names = ", ".join(f.column for f in fields)
        return (
            f"INSERT INTO {model._meta.db_table} ({names}{', ' + extra if extra else ''}) "
            f"SELECT {names}{', %s' if extra else ''} FROM json_to_recordset(%s::json) AS t({record}) {conflict}"
        )

    template_columns = ["id", *_UPDATE_FIELDS]
    updates = ", ".join(
        f"{PassTemplate._meta.get_field(name).column} = EXCLUDED.{PassTemplate._meta.get_field(name).column}"
        for name in _UPDATE_FIELDS
    )
    template_sql = insert(
        PassTemplate, template_columns, extra="first_seen_at", conflict=f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )
    field_updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _FIELD_UPDATE_COLUMNS)
    field_sql = insert(
        TemplateInputField,
        ["template_id", "identifier", *_FIELD_UPDATE_COLUMNS],
        conflict=f"ON CONFLICT (template_id, identifier) DO UPDATE SET {field_updates}",
    )
    return template_sql, field_sql


def _prepare(items: list, *, known: dict[str, tuple[str, bool]], now: datetime) -> PreparedPage:
    """Compare API objects with `known` (see _mirror_state), which it keeps current; writes nothing.

    A template the mirror cannot store is left out with its reason, and the rest of the page goes on.
    """
    page = PreparedPage()
    for item in items:
        try:
            digest, has_nul = _fingerprint(item)
            template_id = str(item["id"]) if isinstance(item, dict) and "id" in item else None
            state = known.get(template_id) if template_id else None
            if state == (digest, False):
                page.unchanged += 1
                continue
            columns = _template_columns(item, digest=digest, now=now, has_nul=has_nul)
            fields = _input_field_columns(columns["id"], columns["raw"])
        except (InvalidTemplate, orjson.JSONEncodeError) as exc:
            page.skipped.append(str(exc))
            continue
        template_id = str(columns["id"])  # canonical: an upper-case id upstream is the same template
        state = known.get(template_id)
        known[template_id] = (digest, False)
        page.templates.append(columns)
        page.fields.extend(fields)
        if state is None:
            page.created += 1
        else:
            page.updated += 1
            page.replaced.append(template_id)
    return page
