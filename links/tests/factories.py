"""Test data for the links app: the sandbox's demo template through the real sync, and a template with every
field format written straight into the mirror (the sandbox's generated ones are random)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from django.core.files import File
from django.utils import timezone

from links import services
from links.models import LinkBatch
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

DATA = Path(__file__).resolve().parent / "data"

# (identifier, label, format, type, mandatory)
EVERY_FORMAT_FIELDS = [
    ("name", "Nafn", "TEXT", "ISSUER", True),
    ("kennitala", "Kennitala", "KENNITALA", "ISSUER", False),
    ("birthday", "Fæðingardagur", "DATE", "ISSUER", False),
    ("memberNumber", "Félagsnúmer", "NUMBER", "ISSUER", False),
    ("website", "Vefsíða", "URL", "ISSUER", False),
    ("email", "Netfang", "EMAIL", "ISSUER", False),
    ("phone", "Sími", "PHONE_NUMBER", "MEMBER", True),  # the holder gives it on the claim page
    ("note", "Athugasemd", "TEXT", "ISSUER", False),
    ("comment", "Umsögn", "TEXT", "ISSUER", False),
    ("title", "Titill", "TEXT", "ISSUER", False),
]


def demo_template() -> PassTemplate:
    """The sandbox's club card (name, email, phone: all ISSUER), mirrored by the real sync."""
    run = sync.templates_sync_all()
    assert run.status == "succeeded", run.error
    return PassTemplate.objects.get(pk=DEMO_TEMPLATE_ID)


def every_format_template(
    *, allowed_domains: list[str] | None = None, min_age: int | None = None, **columns
) -> PassTemplate:
    return template_with_fields(EVERY_FORMAT_FIELDS, allowed_domains=allowed_domains, min_age=min_age, **columns)


def template_with_fields(
    fields: list[tuple[str, str, str, str, bool]],
    *,
    allowed_domains: list[str] | None = None,
    min_age: int | None = None,
    name: str = "Félagsskírteini",
    **columns,
) -> PassTemplate:
    """A template with these (identifier, label, format, type, mandatory) input fields, written into the mirror."""
    template_id = uuid.uuid4()
    raw = {
        "id": str(template_id),
        "type": "MEMBER",
        "name": name,
        "status": "ACTIVE",
        "allowedEmailDomains": [{"sortOrder": i, "emailDomain": d} for i, d in enumerate(allowed_domains or [])],
        "useEmailDomainVerification": bool(allowed_domains),
        "kennitalaAgeVerification": min_age,
        "inputFields": [
            {"identifier": identifier, "label": label, "format": fmt, "type": kind, "isMandatory": mandatory}
            for identifier, label, fmt, kind, mandatory in fields
        ],
    }
    now = timezone.now()
    template = PassTemplate.objects.create(
        id=template_id,
        type="MEMBER",
        name=name,
        status="ACTIVE",
        raw=raw,
        content_hash=hashlib.sha256(str(raw).encode()).hexdigest(),
        first_seen_at=now,
        changed_at=now,
        use_email_domain_verification=bool(allowed_domains),
        kennitala_age_verification=min_age,
        **columns,
    )
    return template


def upload(template: PassTemplate, path: Path, *, user=None, delimiter: str | None = None) -> LinkBatch:
    with path.open("rb") as binary:
        return services.link_batch_create(
            template=template, uploaded_by=user, file=File(binary, name=path.name), delimiter=delimiter
        )


def make_links(
    template: PassTemplate, path: Path, *, user=None, mapping: dict | None = None, strict: bool = False
) -> LinkBatch:
    """Upload, confirm the automatic mapping (or the one given) and process, as the worker would."""
    batch = upload(template, path, user=user)
    mapping = batch.mapping if mapping is None else mapping
    services.link_batch_confirm(batch=batch, mapping=mapping, strict=strict, enqueue=False)
    return services.link_batch_process(batch_id=batch.pk)
