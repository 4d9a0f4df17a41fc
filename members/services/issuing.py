"""Issuing: the one way a member comes to be (`member_issue`), and the retries of a pass SmartPages could not
take yet."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from templates_sync.client import (
    Conflict,
    PermanentError,
    SmartPagesClient,
    SmartPagesError,
    TransientError,
    smartpages_client,
)
from templates_sync.enqueue import enqueue_after_commit
from templates_sync.models import PassTemplate

from .. import selectors
from ..models import (
    Member,
    MemberStatusChange,
)
from ..search_text import member_search_fields
from ..validation import validate_values
from . import InvalidMemberValues, IssueRefused, acting_user
from .counts import template_member_count_add

logger = logging.getLogger(__name__)


class IssueKind(StrEnum):
    CREATED = "created"  # a new member: issued, pending (a retry is scheduled) or failed with the reason
    ALREADY_ENROLLED = "already_enrolled"  # the External ID (or this same claim form) already had a member


@dataclass(frozen=True)
class IssueResult:
    """What `member_issue` did: made `member`, or found it already there."""

    member: Member
    kind: IssueKind


def member_issue(
    *,
    template: PassTemplate,
    values: Mapping[str, str],
    external_id: str | None,
    source: str,
    source_batch_id: int | None = None,
    source_row: int | None = None,
    user=None,
    claim_nonce: str | None = None,
    client: SmartPagesClient | None = None,
) -> IssueResult:
    """Create a member and its pass upstream; the one way a member comes to be.

    Returns an `IssueResult`. When a member of this template already has `external_id`, that member is
    returned as it is, with no upstream call, as `ALREADY_ENROLLED`: callers show the existing pass. The same
    holds for `claim_nonce` (the claim form's one-time value): a form posted twice gets the member its first
    post made. A new member (`CREATED`) ends ISSUED, FAILED (with `failure_reason`; a 409 from SmartPages also
    sets `upstream_conflict`) or, when SmartPages could not be reached, PENDING with a retry task scheduled
    (after commit) that tries again with backoff.

    Raises IssueRefused for a template that cannot issue, InvalidMemberValues for values that fail the
    template's input-field rules. Must not be called inside a transaction (it calls SmartPages).
    """
    refusal = template.issue_refusal_reason
    if refusal:
        raise IssueRefused(refusal)
    clean, errors, _warnings = validate_values(
        selectors.template_field_specs(template=template),
        values,
        rules=selectors.template_rules(template=template),
        region=settings.PHONE_DEFAULT_REGION,
    )
    if errors:
        raise InvalidMemberValues(errors)
    external_id = (external_id or "").strip() or None
    member = Member(
        template=template,
        external_id=external_id,
        values={key: value for key, value in clean.items() if value != ""},
        source=source,
        source_batch_id=source_batch_id,
        source_row=source_row,
        claim_nonce=claim_nonce or None,
        created_by=acting_user(user),
        status=Member.Status.PENDING,
        **member_search_fields(specs=selectors.template_field_specs(template=template), values=clean),
    )
    try:
        with transaction.atomic():
            member.save(force_insert=True)
            template_member_count_add(template_id=template.pk)
            MemberStatusChange.objects.create(member=member, old="", new=Member.Status.PENDING,
                                              reason="Created.", by=member.created_by)  # fmt: skip
    except IntegrityError:
        existing = Member.objects.filter(template=template, external_id=external_id).first() if external_id else None
        if existing is None and claim_nonce:
            existing = Member.objects.filter(template=template, claim_nonce=claim_nonce).first()
        if existing is None:
            raise
        return IssueResult(member=existing, kind=IssueKind.ALREADY_ENROLLED)
    member = _member_send(member=member, client=client)
    if member.status == Member.Status.PENDING:
        member_retry_later(member=member)
    return IssueResult(member=member, kind=IssueKind.CREATED)


def member_add(*, template: PassTemplate, values: Mapping[str, str], external_id: str | None, user,
               client: SmartPagesClient | None = None) -> IssueResult:  # fmt: skip
    """Staff's "Add member": an explicit External ID, else the template's autofill value, else none.

    The explicit one is normalised like the CSV column and autofill (selectors.explicit_external_id), so a
    holder added by hand and the same holder's link find one member. Raises InvalidIdentity when autofill
    is on and the typed External ID or the value autofill reads is not valid.
    """
    external_id = selectors.explicit_external_id(template=template, raw=external_id or "")
    if external_id is None:
        external_id = selectors.external_id_for_values(template=template, values=values)
    return member_issue(template=template, values=values, external_id=external_id, source=Member.Source.MANUAL,
                        user=user, client=client)  # fmt: skip


# A pending member is tried this many times in all (the first attempt included), then marked failed with
# the reason, so every claim ends issued or failed. With `issue_retry_delay` that spans about half an hour.
ISSUE_MAX_ATTEMPTS = 12
RETRY_TASK = "members.member_issue_retry"


def issue_retry_delay(attempt: int) -> int:
    """Seconds to wait after attempt number `attempt` (1-based) before the next: 2, 4, 8 … capped at 10 min."""
    return min(2 ** max(attempt, 1), 600)


@dataclass(frozen=True)
class IssueRetry:
    """What one call of `member_issue_retry` did."""

    member: Member
    # True only for the caller that claimed and made this attempt. A caller that lost the claim (another
    # retry of the same member got there first) or found nothing to try made no attempt.
    attempted: bool

    @property
    def retry_later(self) -> bool:
        """Whether this caller should schedule the next attempt. Only the one that made this attempt does, so
        a redelivered task or the stale sweep racing a live chain never starts a second chain (two chains
        would spend ISSUE_MAX_ATTEMPTS in half the time and fail a member that could still be issued)."""
        return self.attempted and self.member.status == Member.Status.PENDING


def member_issue_retry(*, member: Member, client: SmartPagesClient | None = None,
                       expected_attempts: int | None = None) -> IssueRetry:  # fmt: skip
    """Try again to create the pass of a PENDING member that SmartPages could not take earlier.

    The attempt is claimed first by bumping `issue_attempts` from the value this caller read: of two retries
    that read the same state (a redelivered task and its original), only one POSTs, so a member without an
    External ID (which SmartPages cannot deduplicate) does not get two passes. The result says whether this
    caller made the attempt; only then may it schedule the next one (`IssueRetry.retry_later`).

    `expected_attempts` (a retry task passes the count its scheduler left) makes the claim stricter: a task
    that arrives after its chain already moved on finds another count and makes no attempt.
    """
    if member.status != Member.Status.PENDING or member.pass_id is not None:
        return IssueRetry(member=member, attempted=False)
    expected = member.issue_attempts if expected_attempts is None else expected_attempts
    claimed = Member.objects.filter(
        pk=member.pk, status=Member.Status.PENDING, pass_id__isnull=True, issue_attempts=expected
    ).update(issue_attempts=F("issue_attempts") + 1, updated_at=timezone.now())
    if not claimed:
        member.refresh_from_db()
        return IssueRetry(member=member, attempted=False)
    member.issue_attempts = expected + 1
    return IssueRetry(member=_member_send(member=member, client=client, attempt_counted=True), attempted=True)


def member_reissue_failed(*, member: Member, client: SmartPagesClient | None = None) -> Member:
    """Issue again a member that SmartPages refused, when its holder claims again.

    A failed member keeps its External ID, so without this every later claim of an autofill link would find
    it and show "We could not create your pass" for good, even after the cause upstream is fixed. The move
    back to PENDING is a compare-and-set on status=failed: of simultaneous claims only one wins and POSTs;
    the others get the member as the winner left it. From there it is the retry path (`member_issue_retry`),
    with a retry chain when SmartPages cannot be reached. A 409 conflict is not retried: that pass was made
    outside the portal and another POST would only be refused again.

    Must not be called inside a transaction (it calls SmartPages).
    """
    if member.status != Member.Status.FAILED or member.upstream_conflict or member.pass_id is not None:
        return member
    with transaction.atomic():
        won = Member.objects.filter(
            pk=member.pk, status=Member.Status.FAILED, upstream_conflict=False, pass_id__isnull=True
        ).update(
            status=Member.Status.PENDING,
            failure_reason="",
            # One, not zero: the new attempts get a full budget, and `_adopt_after_lost_reply` still knows an
            # earlier POST was made (a 409 on the next one may be that POST's pass, which is this member's).
            issue_attempts=1,
            updated_at=timezone.now(),
        )
        if won:
            MemberStatusChange.objects.create(member=member, old=Member.Status.FAILED, new=Member.Status.PENDING,
                                              reason="Claimed again by the holder; issuing again.")  # fmt: skip
    member.refresh_from_db()
    if not won:
        return member
    retry = member_issue_retry(member=member, client=client)
    if retry.retry_later:
        member_retry_later(member=retry.member)
    return retry.member


# Longer than the longest backoff (issue_retry_delay caps at 10 min): a pending member untouched for this long
# has no retry waiting for it any more.
STALE_PENDING_AFTER = timedelta(minutes=15)


def member_issue_retry_stale(*, limit: int = 500, client: SmartPagesClient | None = None) -> int:
    """Try again every pending member whose retry chain was lost; schedule a new chain for those still pending.
    Returns how many members were tried."""
    cutoff = timezone.now() - STALE_PENDING_AFTER
    stale = list(Member.objects.filter(status=Member.Status.PENDING, pass_id__isnull=True, updated_at__lt=cutoff)
                 .select_related("template").order_by("updated_at")[:limit])  # fmt: skip
    if not stale:
        return 0
    with smartpages_client(client) as smartpages:
        for member in stale:
            retry = member_issue_retry(member=member, client=smartpages)
            if retry.retry_later:
                member_retry_later(member=retry.member)
    return len(stale)


def member_retry_later(*, member: Member) -> None:
    """Schedule the next attempt of a member left pending, after commit, with backoff. When the broker is
    away the member simply stays pending: `member_issue_retry_stale` finds it."""
    enqueue_after_commit(RETRY_TASK, member.pk, member.issue_attempts, countdown=issue_retry_delay(member.issue_attempts))


def _member_send(*, member: Member, client: SmartPagesClient | None, attempt_counted: bool = False) -> Member:
    body = {
        "passTemplateId": str(member.template_id),
        "inputFields": [{"identifier": key, "value": value} for key, value in member.values.items()],
    }
    if member.external_id is not None:
        body["externalIdentifier"] = member.external_id
    if not attempt_counted:
        member.issue_attempts += 1
    try:
        with smartpages_client(client) as smartpages:
            try:
                reply = smartpages.create_pass(body)
            except Conflict as exc:
                adopted = _adopt_after_lost_reply(member=member, smartpages=smartpages, error=exc)
                if adopted is None:
                    raise
                reply = adopted
    except TransientError as exc:
        if member.issue_attempts >= ISSUE_MAX_ATTEMPTS:
            reason = (f"SmartPages could not be reached in {member.issue_attempts} attempts; the pass was not "
                      f"created. Last error: {exc}")  # fmt: skip
            return _member_fail(member=member, reason=reason, error=exc)
        logger.warning("Pass for member %s not created yet: %s", member.pk, exc)
        member.last_error = str(exc)
        member.save(update_fields=["issue_attempts", "last_error", "updated_at"])
        return member
    except Conflict as exc:
        member.upstream_conflict = True
        member.upstream = {"error": exc.body} if exc.body is not None else {}
        reason = (
            f"SmartPages already has a pass with External ID “{member.external_id}” on this template "
            "(made outside the portal, or by an earlier attempt). It was not linked to this member."
        )
        return _member_fail(member=member, reason=reason, error=exc)
    except PermanentError as exc:
        member.upstream = {"error": exc.body} if exc.body is not None else {}
        return _member_fail(member=member, reason=str(exc), error=exc)
    try:
        pass_id = uuid.UUID(str(reply.get("id")))
    except (AttributeError, ValueError):
        member.upstream = reply if isinstance(reply, dict) else {}
        return _member_fail(member=member, reason="SmartPages created the pass but its reply had no Pass ID.", error=None)
    member.pass_id, member.upstream, member.last_error = pass_id, reply, ""
    with transaction.atomic():
        member.status = Member.Status.ISSUED
        member.save(update_fields=["pass_id", "upstream", "status", "issue_attempts", "last_error", "updated_at"])
        MemberStatusChange.objects.create(member=member, old=Member.Status.PENDING, new=Member.Status.ISSUED,
                                          reason="Pass created on SmartPages.")  # fmt: skip
    return member


def _adopt_after_lost_reply(*, member: Member, smartpages: SmartPagesClient, error: Conflict) -> dict | None:
    """On a retry, a 409 may mean our own earlier POST arrived and only its reply was lost. When SmartPages
    names the pass and it carries this member's External ID, that pass is this member's: adopt it."""
    if member.issue_attempts <= 1 or not isinstance(error.body, dict) or not error.body.get("passId"):
        return None
    try:
        found = smartpages.get_pass(str(error.body["passId"]))
    except SmartPagesError:
        return None
    if found.get("externalIdentifier") == member.external_id and found.get("passTemplateId") == str(member.template_id):
        return found
    return None


def _member_fail(*, member: Member, reason: str, error: Exception | None) -> Member:
    logger.warning("Pass for member %s refused by SmartPages: %s", member.pk, error or reason)
    with transaction.atomic():
        old, member.status, member.failure_reason = member.status, Member.Status.FAILED, reason
        member.save(update_fields=["status", "failure_reason", "upstream", "upstream_conflict", "issue_attempts",
                                   "updated_at"])  # fmt: skip
        MemberStatusChange.objects.create(member=member, old=old, new=Member.Status.FAILED, reason=reason)
    return member
