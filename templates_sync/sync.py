"""The template sync service: mirror SmartPages pass templates into PassTemplate rows.

A full run pages through the API by what the server answers, upserts each page in one short
transaction, writes nothing for unchanged templates, and marks templates removed only after a run that
read every page cleanly — and only those that SmartPages confirms are gone (404). A failed run removes
nothing. One full run at a time: the RUNNING SyncRun row is the lock (see SyncRun).
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .client import NotFound, SmartPagesClient, SmartPagesError, client_from_settings
from .models import PassTemplate, SyncRun, TemplateInputField

logger = logging.getLogger(__name__)

# Columns rewritten when a template's content changes (everything but id and first_seen_at).
_UPDATE_FIELDS = [
    "type", "name", "description", "status", "stamps", "pass_price", "disable_issue", "pos_distribution_only",
    "lock_input_fields", "deliver_by_kennitala", "use_email_domain_verification", "kennitala_age_verification",
    "has_dynamic_barcode", "supports_google_wallet", "delivery_page_url", "when_last_update_sent", "raw",
    "content_hash", "changed_at", "removed_at",
]  # fmt: skip


class InvalidTemplate(ValueError):
    """An upstream template object the mirror cannot store (no id, unknown shape)."""


def content_hash(item: dict) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _template_from_api(item: dict, *, digest: str, now: datetime) -> PassTemplate:
    try:
        template_id = uuid.UUID(str(item["id"]))
        price = item.get("passPrice")
        return PassTemplate(
            id=template_id,
            type=str(item.get("type") or ""),
            name=str(item.get("name") or ""),
            description=str(item.get("description") or ""),
            status=str(item.get("status") or ""),
            stamps=int(item["stamps"]) if item.get("stamps") is not None else None,
            pass_price=Decimal(str(price)) if price is not None else None,
            disable_issue=bool(item.get("disableIssue")),
            pos_distribution_only=bool(item.get("posDistributionOnly")),
            lock_input_fields=bool(item.get("lockInputFields")),
            deliver_by_kennitala=bool(item.get("deliverByKennitala")),
            use_email_domain_verification=bool(item.get("useEmailDomainVerification")),
            kennitala_age_verification=(
                int(item["kennitalaAgeVerification"]) if item.get("kennitalaAgeVerification") is not None else None
            ),
            has_dynamic_barcode=bool(item.get("hasDynamicBarcode")),
            supports_google_wallet=bool(item.get("supportsGoogleWallet")),
            delivery_page_url=str(item.get("deliveryPageUrl") or ""),
            when_last_update_sent=parse_datetime(item["whenLastUpdateSent"]) if item.get("whenLastUpdateSent") else None,
            raw=item,
            content_hash=digest,
            first_seen_at=now,
            changed_at=now,
            removed_at=None,
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
        raise InvalidTemplate(f"SmartPages sent a template the mirror cannot read ({exc!r}).") from exc


def _input_fields_from_api(template: PassTemplate) -> list[TemplateInputField]:
    fields = []
    for position, field in enumerate(template.raw.get("inputFields") or []):
        try:
            fields.append(
                TemplateInputField(
                    template=template,
                    position=position,
                    identifier=str(field["identifier"]),
                    label=str(field.get("label") or ""),
                    description=str(field.get("description") or ""),
                    is_mandatory=bool(field.get("isMandatory")),
                    is_unique=bool(field.get("isUnique")),
                    format=str(field.get("format") or ""),
                    type=str(field.get("type") or ""),
                )
            )
        except (KeyError, TypeError) as exc:
            raise InvalidTemplate(f"Template {template.id} has an input field without an identifier.") from exc
    return fields


def _store(items: list[dict], *, now: datetime) -> tuple[int, int, int]:
    """Upsert one page of API objects; returns (created, updated, unchanged). Writes nothing for unchanged."""
    digests = {}
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            raise InvalidTemplate("SmartPages sent a template without an id.")
        digests[str(item["id"])] = (item, content_hash(item))
    existing = {
        str(pk): (digest, removed_at)
        for pk, digest, removed_at in PassTemplate.objects.filter(id__in=list(digests)).values_list(
            "id", "content_hash", "removed_at"
        )
    }
    to_write: list[PassTemplate] = []
    created = updated = unchanged = 0
    for template_id, (item, digest) in digests.items():
        known = existing.get(template_id)
        if known == (digest, None):
            unchanged += 1
            continue
        to_write.append(_template_from_api(item, digest=digest, now=now))
        if known is None:
            created += 1
        else:
            updated += 1
    if not to_write:
        return created, updated, unchanged
    with transaction.atomic():
        # One INSERT … ON CONFLICT for new and changed rows alike; first_seen_at stays as it was.
        PassTemplate.objects.bulk_create(
            to_write, update_conflicts=True, unique_fields=["id"], update_fields=_UPDATE_FIELDS
        )
        TemplateInputField.objects.filter(template_id__in=[t.id for t in to_write]).delete()
        TemplateInputField.objects.bulk_create([f for t in to_write for f in _input_fields_from_api(t)])
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


def templates_sync_all(
    *, run: SyncRun | None = None, trigger: str = SyncRun.Trigger.COMMAND, triggered_by=None,
    client: SmartPagesClient | None = None,
) -> SyncRun:  # fmt: skip
    """Run a full sync (or record it as skipped when one is running). Returns the finished SyncRun."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by)
    if not _claim_lock(run):
        logger.info("template sync %s skipped: another run holds the lock", run.pk)
        return run
    seen: set[str] = set()
    clean = True
    try:
        client = client or client_from_settings()
        page_number, first_total = 0, None
        while True:
            page = client.list_templates(page=page_number, page_size=settings.SMARTPAGES_PAGE_SIZE)
            if first_total is None:
                first_total = page.total_items
            elif page.total_items != first_total:
                clean = False
            fresh = [item for item in page.data if str(item.get("id")) not in seen]
            seen.update(str(item.get("id")) for item in page.data)
            created, updated, unchanged = _store(fresh, now=timezone.now())
            run.created += created
            run.updated += updated
            run.unchanged += unchanged
            run.pages += 1
            run.total_pages, run.total_items = page.total_pages, page.total_items
            run.save(update_fields=["created", "updated", "unchanged", "pages", "total_pages", "total_items"])
            page_number += 1
            # Page by what the server says: its totalPages, and stop on an empty page whatever it claims.
            if page_number >= page.total_pages or not page.data:
                break
        if clean and len(seen) == first_total:
            _mark_removed(run, client=client, seen=seen)
        else:
            run.warning = (
                f"Upstream changed during the run ({len(seen)} templates read, {first_total} announced): "
                "no template was marked removed; the next run will settle it."
            )
        run.status = SyncRun.Status.SUCCEEDED
    except (SmartPagesError, InvalidTemplate) as exc:
        run.status = SyncRun.Status.FAILED
        run.error = str(exc)
        logger.warning("template sync %s failed: %s", run.pk, exc)
    except Exception:
        run.status = SyncRun.Status.FAILED
        run.error = "Unexpected error; see the worker log."
        logger.exception("template sync %s failed unexpectedly", run.pk)
    finally:
        run.finished_at = timezone.now()
        run.save()
    return run


def _mark_removed(run: SyncRun, *, client: SmartPagesClient, seen: set[str]) -> None:
    """Mark templates missing from a clean run as removed, each confirmed by a 404 from SmartPages.

    The list can shift under a run (an item deleted on an earlier page pushes a later item back onto
    a page already read), so absence from the pages alone is not proof.
    """
    candidates = PassTemplate.objects.filter(removed_at__isnull=True).exclude(id__in=seen).values_list("id", flat=True)
    for template_id in list(candidates.iterator()):
        try:
            item = client.get_template(str(template_id))
        except NotFound:
            run.removed += PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
                removed_at=timezone.now()
            )
            continue
        created, updated, unchanged = _store([item], now=timezone.now())
        run.updated += updated


def template_refresh(*, template_id: str, triggered_by=None, trigger: str = SyncRun.Trigger.MANUAL,
                     run: SyncRun | None = None, client: SmartPagesClient | None = None) -> SyncRun:  # fmt: skip
    """Refresh one template from GET /api/v1/pass-template/{id}; a 404 marks it removed."""
    run = run or sync_run_queue(trigger=trigger, triggered_by=triggered_by, kind=SyncRun.Kind.SINGLE,
                                template_id=template_id)  # fmt: skip
    run.status, run.started_at = SyncRun.Status.RUNNING, timezone.now()
    run.save(update_fields=["status", "started_at"])
    try:
        client = client or client_from_settings()
        try:
            item = client.get_template(str(template_id))
        except NotFound:
            run.removed = PassTemplate.objects.filter(pk=template_id, removed_at__isnull=True).update(
                removed_at=timezone.now()
            )
            run.warning = "SmartPages no longer has this template."
        else:
            if str(item.get("id")) != str(template_id):
                raise InvalidTemplate("SmartPages answered with a different template than the one asked for.")
            run.created, run.updated, run.unchanged = _store([item], now=timezone.now())
        run.pages = 1
        run.status = SyncRun.Status.SUCCEEDED
    except (SmartPagesError, InvalidTemplate) as exc:
        run.status, run.error = SyncRun.Status.FAILED, str(exc)
        logger.warning("template refresh %s failed: %s", template_id, exc)
    except Exception:
        run.status, run.error = SyncRun.Status.FAILED, "Unexpected error; see the worker log."
        logger.exception("template refresh %s failed unexpectedly", template_id)
    finally:
        run.finished_at = timezone.now()
        run.save()
    return run
