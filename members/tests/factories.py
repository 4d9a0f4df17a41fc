"""Test data: templates mirrored from the sandbox through the real sync, members written directly."""

from __future__ import annotations

import itertools
import uuid

from members.models import Member
from members.search_text import member_search_text
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

_rows = itertools.count(1)


def mirror_template(template_id: str = DEMO_TEMPLATE_ID) -> PassTemplate:
    """Mirror one sandbox template (the `sandbox` fixture points the settings at it)."""
    run = sync.template_refresh(template_id=str(template_id))
    assert run.status == "succeeded", run.error
    return PassTemplate.objects.get(pk=template_id)


def make_member(
    template: PassTemplate,
    *,
    name: str = "Jón Jónsson",
    email: str = "",
    phone: str = "",
    external_id: str | None = None,
    status: str = Member.Status.ISSUED,
    values: dict | None = None,
    source: str = Member.Source.LINK,
    pass_id: uuid.UUID | None = None,
    **extra,
) -> Member:
    """A member as the mirror would hold it, without an upstream call (for list, search and autofill tests)."""
    if values is None:
        values = {"name": name, "email": email, "phone": phone}
    return Member.objects.create(
        template=template,
        display_name=name,
        email=email.strip().lower(),
        phone=phone,
        external_id=external_id,
        search_text=member_search_text(display_name=name, email=email.strip().lower()),
        status=status,
        values=values,
        source=source,
        source_row=next(_rows),
        pass_id=pass_id or (uuid.uuid4() if status in (Member.Status.ISSUED, Member.Status.VOIDED) else None),
        **extra,
    )
