"""Actions on a member's pass once it exists upstream: void it, read it again."""

from __future__ import annotations

import logging

from django.db import transaction

from templates_sync.client import (
    PermanentError,
    SmartPagesClient,
    TransientError,
    smartpages_client,
)

from ..models import (
    Member,
    MemberStatusChange,
)
from . import MemberError, acting_user

logger = logging.getLogger(__name__)


# --- voiding and refreshing ---------------------------------------------------------------------------------
def member_void(*, member: Member, user, client: SmartPagesClient | None = None) -> Member:
    """Void the member's pass upstream (PUT isVoided) and mark the member VOIDED."""
    if member.status != Member.Status.ISSUED or member.pass_id is None:
        raise MemberError("Only an issued pass can be voided.")
    try:
        with smartpages_client(client) as smartpages:
            reply = smartpages.update_pass(str(member.pass_id), {"isVoided": True})
    except TransientError as exc:
        logger.warning("Voiding member %s: %s", member.pk, exc)
        raise MemberError("SmartPages could not be reached; the pass is not voided. Try again in a minute.") from exc
    except PermanentError as exc:
        logger.warning("Voiding member %s refused: %s", member.pk, exc)
        raise MemberError("SmartPages refused to void this pass; the pass is unchanged.") from exc
    return _member_record_upstream(member=member, reply=reply, status=Member.Status.VOIDED,
                                   reason="Voided by staff.", user=user)  # fmt: skip


def member_refresh(*, member: Member, client: SmartPagesClient | None = None) -> Member:
    """Read the pass again (GET /api/v1/pass/{id}); a pass voided upstream is marked VOIDED here too."""
    if member.pass_id is None:
        raise MemberError("This member has no pass on SmartPages yet.")
    try:
        with smartpages_client(client) as smartpages:
            reply = smartpages.get_pass(str(member.pass_id))
    except TransientError as exc:
        logger.warning("Refreshing member %s: %s", member.pk, exc)
        raise MemberError("SmartPages could not be reached; try again in a minute.") from exc
    except PermanentError as exc:
        logger.warning("Refreshing member %s refused: %s", member.pk, exc)
        raise MemberError("SmartPages did not return this pass (it may have been deleted there).") from exc
    upstream_voided = bool(reply.get("isVoided")) or reply.get("status") == "VOIDED"
    status = member.status
    if upstream_voided and member.status == Member.Status.ISSUED:
        status = Member.Status.VOIDED
    elif not upstream_voided and member.status == Member.Status.VOIDED:
        status = Member.Status.ISSUED
    return _member_record_upstream(member=member, reply=reply, status=status,
                                   reason="Status read from SmartPages.", user=None)  # fmt: skip


def _member_record_upstream(*, member: Member, reply: dict, status: str, reason: str, user) -> Member:
    with transaction.atomic():
        old = member.status
        member.upstream, member.status = reply, status
        member.save(update_fields=["upstream", "status", "updated_at"])
        if old != status:
            MemberStatusChange.objects.create(member=member, old=old, new=status, reason=reason,
                                              by=acting_user(user))  # fmt: skip
    return member


