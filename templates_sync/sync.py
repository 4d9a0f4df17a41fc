"""The template sync service: mirror SmartPages pass templates into PassTemplate rows.

A full run pages through the API by what the server answers, upserts each page in one short
transaction, writes nothing for unchanged templates, and marks templates removed only after a run that
read every page cleanly — and only those that SmartPages confirms are gone (404). A failed run removes
nothing. One full run at a time: the RUNNING SyncRun row is the lock (see SyncRun).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .client import NotFound, SmartPagesClient, SmartPagesError, TemplatePage, smartpages_client
from .models import PassTemplate, SyncRun, TemplateInputField

logger = logging.getLogger(__name__)

# Columns rewritten when a template's content changes (everything but id and first_seen_at).
_UPDATE_FIELDS = [
    "type", "name", "description", "status", "stamps", "pass_price", "disable_issue", "pos_distribution_only",
    "lock_input_fields", "deliver_by_kennitala", "use_email_domain_verification", "kennitala_age_verification",
    "has_dynamic_barcode", "supports_google_wallet", "delivery_page_url", "when_last_update_sent", "raw",
    "content_hash", "changed_at", "removed_at",
]  # fmt: skip


_FIELD_UPDATE_COLUMNS = ["position", "label", "description", "is_mandatory", "is_unique", "format", "type"]


class InvalidTemplate(ValueError):
    """An upstream template object the mirror cannot store (no id, unknown shape)."""


def content_hash(item: dict) -> str:
    """A fingerprint of one API object, to skip unchanged templates without touching their rows.

    orjson with sorted keys is canonical and about eight times faster than json.dumps; hashing is most of
    an unchanged re-sync's own work.
    """
    return hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _template_columns(item: dict, *, digest: str, now: datetime) -> dict:
    """The PassTemplate column values for one API object (every column but first_seen_at)."""
    try:
        price = item.get("passPrice")
        age = item.get("kennitalaAgeVerification")
        return {
            "id": uuid.UUID(str(item["id"])),
            "type": str(item.get("type") or ""),
            "name": str(item.get("name") or ""),
            "description": str(item.get("description") or ""),
            "status": str(item.get("status") or ""),
            "stamps": int(item["stamps"]) if item.get("stamps") is not None else None,
            "pass_price": Decimal(str(price)) if price is not None else None,
            "disable_issue": bool(item.get("disableIssue")),
            "pos_distribution_only": bool(item.get("posDistributionOnly")),
            "lock_input_fields": bool(item.get("lockInputFields")),
            "deliver_by_kennitala": bool(item.get("deliverByKennitala")),
            "use_email_domain_verification": bool(item.get("useEmailDomainVerification")),
            "kennitala_age_verification": int(age) if age is not None else None,
            "has_dynamic_barcode": bool(item.get("hasDynamicBarcode")),
            "supports_google_wallet": bool(item.get("supportsGoogleWallet")),
            "delivery_page_url": str(item.get("deliveryPageUrl") or ""),
            "when_last_update_sent": (
                parse_datetime(item["whenLastUpdateSent"]) if item.get("whenLastUpdateSent") else None
            ),
            "raw": item,
            "content_hash": digest,
            "changed_at": now,
            "removed_at": None,
        }
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise InvalidTemplate(f"SmartPages sent a template the mirror cannot read ({exc!r}).") from exc


def _input_field_columns(template_id: uuid.UUID, item: dict) -> list[dict]:
    rows, identifiers = [], set()
    for position, field in enumerate(item.get("inputFields") or []):
        if isinstance(field, dict) and field.get("identifier") in identifiers:
            continue  # identifiers are unique per template; a repeat is kept in `raw` only
        try:
            identifiers.add(field["identifier"])
            rows.append({
                "template_id": template_id,
                "position": position,
                "identifier": str(field["identifier"]),
                "label": str(field.get("label") or ""),
                "description": str(field.get("description") or ""),
                "is_mandatory": bool(field.get("isMandatory")),
                "is_unique": bool(field.get("isUnique")),
                "format": str(field.get("format") or ""),
                "type": str(field.get("type") or ""),
            })  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise InvalidTemplate(f"Template {template_id} has an input field without an identifier.") from exc
    return rows


def _write_with_orm(templates: list[dict], fields: list[dict], *, replaced: list[str], now: datetime) -> None:
    # One INSERT … ON CONFLICT for new and changed rows alike; first_seen_at stays as it was.
    PassTemplate.objects.bulk_create(
        [PassTemplate(first_seen_at=now, **row) for row in templates],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=_UPDATE_FIELDS,
    )
    if replaced:
        TemplateInputField.objects.filter(template_id__in=replaced).delete()
    # An upsert, not a plain insert: a single-template refresh may have written a "new" template's fields
    # while this run was reading its page.
    TemplateInputField.objects.bulk_create(
        [TemplateInputField(**row) for row in fields],
        update_conflicts=True,
        unique_fields=["template", "identifier"],
        update_fields=_FIELD_UPDATE_COLUMNS,
    )


def _write_with_postgresql(templates: list[dict], fields: list[dict], *, replaced: list[str], now: datetime) -> None:
    """The same writes as _write_with_orm, with each page sent as one JSON document that PostgreSQL
    unpacks (json_to_recordset): building model instances and per-value parameters cost about ten
    times the fetch of the page itself, which this keeps off the Python side."""
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


def _json_text(rows: list[dict]) -> str:
    # orjson writes UUIDs and datetimes itself; Decimal prices go as strings, which PostgreSQL casts.
    return orjson.dumps(rows, default=str).decode()


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
    template_sql = insert(PassTemplate, template_columns, extra="first_seen_at",
                          conflict=f"ON CONFLICT (id) DO UPDATE SET {updates}")  # fmt: skip
    field_updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _FIELD_UPDATE_COLUMNS)
    field_sql = insert(TemplateInputField, ["template_id", "identifier", *_FIELD_UPDATE_COLUMNS],
                       conflict=f"ON CONFLICT (template_id, identifier) DO UPDATE SET {field_updates}")  # fmt: skip
    return template_sql, field_sql


def _mirror_state(ids: list[str] | None = None) -> dict[str, tuple[str, bool]]:
    """id -> (content hash, removed?) for the mirror, or for `ids` only. One query for a whole run."""
    templates = PassTemplate.objects.all() if ids is None else PassTemplate.objects.filter(id__in=ids)
    return {
        str(pk): (digest, removed_at is not None)
        for pk, digest, removed_at in templates.values_list("id", "content_hash", "removed_at").iterator(5000)
    }


def _store(items: list[dict], *, known: dict[str, tuple[str, bool]], now: datetime) -> tuple[int, int, int]:
    """Upsert API objects against `known` (see _mirror_state), which it keeps current.

    Returns (created, updated, unchanged); writes nothing at all for unchanged templates.
    """
    to_write: list[dict] = []
    replaced: list[str] = []  # known templates whose input-field rows are rewritten
    created = updated = unchanged = 0
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            raise InvalidTemplate("SmartPages sent a template without an id.")
        template_id, digest = str(item["id"]), content_hash(item)
        state = known.get(template_id)
        if state == (digest, False):
            unchanged += 1
            continue
        known[template_id] = (digest, False)
        to_write.append(_template_columns(item, digest=digest, now=now))
        if state is None:
            created += 1
        else:
            updated += 1
            replaced.append(template_id)
    if to_write:
        fields = [row for template in to_write for row in _input_field_columns(template["id"], template["raw"])]
        write = _write_with_postgresql if connection.vendor == "postgresql" else _write_with_orm
        with transaction.atomic():
            write(to_write, fields, replaced=replaced, now=now)
    return created, updated, unchanged


# --- runs ---------------------------------------------------------------------------------------------
def sync_run_queue(*, trigger: str, triggered_by=None, kind: str = SyncRun.Kind.FULL, template_id=None) -> SyncRun:
    """Record a queued run, so that a page can follow it before a worker picks it up."""
    return SyncRun.objects.create(kind=kind, template_id=template_id, trigger=trigger, triggered_by=triggered_by)


def _claim_lock(run: SyncRun) -> bool:
    """Move `run` to RUNNING; False when another full run holds the lock (run is then SKIPPED)."""
    stale_before = timezone.now() - timedelta(seconds=settings.TEMPLATE_SYNC_LOCK_SECONDS)
    SyncRun.objects.filter(kind=SyncRun.Kind.FULL, status=SyncRun.Status.RUNNING, started_at__lt=stale_before).update(
        status=SyncRun.Status.FAILED,
        error="Abandoned: the worker running it stopped before it finished.",
        finished_at=timezone.now(),
    )
    run.started_at = timezone.now()
    try:
        with transaction.atomic():
            SyncRun.objects.filter(pk=run.pk).update(status=SyncRun.Status.RUNNING, started_at=run.started_at)
    except IntegrityError:
        run.status = SyncRun.Status.SKIPPED
        run.warning = "Skipped: another full sync was already running."
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "warning", "started_at", "finished_at"])
        return False
    run.status = SyncRun.Status.RUNNING
    return True


class PagePrefetcher:
    """The template pages in order, fetched by a thread that stays one page ahead of the consumer.

    The network and the upstream's work overlap with the database writes of the page before (and, for
    the first page, with loading the mirror's state). Pages are followed by what the server says (its
    totalPages), and an empty page ends the list whatever it claims. A fetch error is raised to the
    consumer, in page order. Use it as a context manager so the thread always ends.
    """

    def __init__(self, client: SmartPagesClient, *, page_size: int):
        self._pages: queue.Queue = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fetch, args=(client, page_size), daemon=True,
                                        name="template-page-fetcher")  # fmt: skip
        self._thread.start()

    def _fetch(self, client: SmartPagesClient, page_size: int) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                page = client.list_templates(page=number, page_size=page_size)
                self._pages.put(page)
                number += 1
                if number >= page.total_pages or not page.data:
                    break
            self._pages.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._pages.put(exc)

    def __iter__(self) -> Iterator[TemplatePage]:
        while (page := self._pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            yield page

    def __enter__(self) -> PagePrefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a fetcher waiting on a full queue
            try:
                self._pages.get(timeout=0.05)
            except queue.Empty:
                pass


PROGRESS_EVERY_SECONDS = 0.5
_PROGRESS_FIELDS = ["created_count", "updated_count", "unchanged", "pages", "total_pages", "total_items"]


def templates_sync_all(
    *, run: SyncRun | None = None, trigger: str = SyncRun.Trigger.COMMAND, triggered_by=None,
    client: SmartPagesClient | None = None,
) -> SyncRun:  # fmt: skip
    """Run a full sync (or record it as skipped when one is running). Returns the finished SyncRun."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by)
    if not _claim_lock(run):
        logger.info("template sync %s skipped: another run holds the lock", run.pk)
        return run
    return _run_to_outcome(run, lambda smartpages: _sync_every_page(run, client=smartpages), client=client)


def _sync_every_page(run: SyncRun, *, client: SmartPagesClient) -> None:
    seen: set[str] = set()
    clean, first_total, progress_saved = True, None, time.monotonic()
    with PagePrefetcher(client, page_size=settings.SMARTPAGES_PAGE_SIZE) as pages:
        known = _mirror_state()
        for page in pages:
            if first_total is None:
                first_total = page.total_items
            elif page.total_items != first_total:
                clean = False
            fresh = [item for item in page.data if str(item.get("id")) not in seen]
            seen.update(str(item.get("id")) for item in page.data)
            created, updated, unchanged = _store(fresh, known=known, now=timezone.now())
            run.created_count += created
            run.updated_count += updated
            run.unchanged += unchanged
            run.pages += 1
            run.total_pages, run.total_items = page.total_pages, page.total_items
            if time.monotonic() - progress_saved >= PROGRESS_EVERY_SECONDS:  # for the progress bar
                run.save(update_fields=_PROGRESS_FIELDS)
                progress_saved = time.monotonic()
    if clean and len(seen) == first_total:
        _mark_removed(run, client=client, known=known, seen=seen)
    else:
        run.warning = (
            f"Upstream changed during the run ({len(seen)} templates read, {first_total} announced): "
            "no template was marked removed; the next run will settle it."
        )


def _run_to_outcome(run: SyncRun, work, *, client: SmartPagesClient | None) -> SyncRun:
    """Do `work(client)` for a running SyncRun and record how it ended; only known errors are shown."""
    try:
        with smartpages_client(client) as smartpages:
            work(smartpages)
        run.status = SyncRun.Status.SUCCEEDED
    except (SmartPagesError, InvalidTemplate) as exc:
        run.status, run.error = SyncRun.Status.FAILED, str(exc)
        logger.warning("template sync run %s failed: %s", run.pk, exc)
    except Exception:
        run.status, run.error = SyncRun.Status.FAILED, "Unexpected error; see the worker log."
        logger.exception("template sync run %s failed unexpectedly", run.pk)
    finally:
        run.finished_at = timezone.now()
        run.save()
    return run


def _mark_removed(run: SyncRun, *, client: SmartPagesClient, known: dict, seen: set[str]) -> None:
    """Mark templates missing from a clean run as removed, each confirmed by a 404 from SmartPages.

    The list can shift under a run (an item deleted on an earlier page pushes a later item back onto
    a page already read), so absence from the pages alone is not proof.
    """
    missing = [template_id for template_id, (_, removed) in known.items() if not removed and template_id not in seen]
    for template_id in missing:
        try:
            item = client.get_template(template_id)
        except NotFound:
            run.removed += PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
                removed_at=timezone.now()
            )
            continue
        created, updated, unchanged = _store([item], known=known, now=timezone.now())
        run.updated_count += updated


def template_refresh(*, template_id: str, triggered_by=None, trigger: str = SyncRun.Trigger.MANUAL,
                     run: SyncRun | None = None, client: SmartPagesClient | None = None) -> SyncRun:  # fmt: skip
    """Refresh one template from GET /api/v1/pass-template/{id}; a 404 marks it removed."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by, kind=SyncRun.Kind.SINGLE,
                                template_id=template_id)  # fmt: skip
    run.status, run.started_at = SyncRun.Status.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    return _run_to_outcome(run, lambda smartpages: _refresh_one(run, str(template_id), client=smartpages),
                           client=client)  # fmt: skip


def _refresh_one(run: SyncRun, template_id: str, *, client: SmartPagesClient) -> None:
    run.pages = 1
    try:
        item = client.get_template(template_id)
    except NotFound:
        run.removed = PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
            removed_at=timezone.now()
        )
        run.warning = "SmartPages no longer has this template."
        return
    if str(item.get("id")) != template_id:
        raise InvalidTemplate("SmartPages answered with a different template than the one asked for.")
    run.created_count, run.updated_count, run.unchanged = _store([item], known=_mirror_state([template_id]), now=timezone.now())
