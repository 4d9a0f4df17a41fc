"""Issuing: the one way a member comes to be (`member_issue`), and the retries of a pass SmartPages could not
take yet."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.failures import on_a_working_connection
from templates_sync.client import (
    Conflict,
    NotFound,
    PermanentError,
    SmartPagesClient,
    SmartPagesError,
    TransientError,
    smartpages_client,
)
from templates_sync.models import PassTemplate

from .. import selectors
from ..models import (
    ExternalIdConflict,
    Member,
    MemberChange,
    MemberStatusChange,
)
from ..search_text import member_search_fields
from ..validation import validate_values
from . import InvalidMemberValues, IssueRefused, MemberError, UniqueValuesTaken, acting_user
from .counts import template_member_count_add

logger = logging.getLogger(__name__)
T = TypeVar("T")


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
    pass_values: Mapping | None = None,
    claimed_at: datetime | None = None,
    client: SmartPagesClient | None = None,
) -> IssueResult:
    """Create a member and its pass upstream; the one way a member comes to be.

    `pass_values`: the pass's own values SmartPages' create takes beside the input fields (`expirationDate`,
    `validFrom`, `backFields`), kept with the member so that a retry sends them too. `claimed_at`: when a holder
    claimed it (a link's claim), written with the row rather than by an update of its own.

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
    # A unique field's value another member holds: refused here, before SmartPages is asked.
    clashes = selectors.unique_value_clashes(template=template, values=clean, external_id=external_id)
    if clashes:
        raise UniqueValuesTaken(clashes)
    member = Member(
        template=template,
        external_id=external_id,
        values={key: value for key, value in clean.items() if value != ""},
        pass_values=dict(pass_values or {}),
        source=source,
        source_batch_id=source_batch_id,
        source_row=source_row,
        claim_nonce=claim_nonce or None,
        last_claimed_at=claimed_at,
        created_by=acting_user(user),
        status=Member.Status.PENDING,
        # The first attempt is recorded with the row itself, before the POST below can reach SmartPages.
        **_attempt_started(attempts=1),
        **member_search_fields(specs=selectors.template_field_specs(template=template), values=clean),
    )
    try:
        with transaction.atomic():
            member.save(force_insert=True)
            template_member_count_add(template_id=template.pk)
            MemberStatusChange.objects.create(
                member=member, old="", new=Member.Status.PENDING, reason="Created.", by=member.created_by
            )
    except IntegrityError:
        existing = Member.objects.filter(template=template, external_id=external_id).first() if external_id else None
        if existing is None and claim_nonce:
            existing = Member.objects.filter(template=template, claim_nonce=claim_nonce).first()
        if existing is None:
            raise
        return IssueResult(member=existing, kind=IssueKind.ALREADY_ENROLLED)
    with smartpages_client(client, in_request=True) as smartpages:
        member = _member_send(member=member, client=smartpages)
    # A member left pending waits in its row (`next_attempt_at`); the recovery sweep sends its retry when due.
    return IssueResult(member=member, kind=IssueKind.CREATED)


@dataclass(frozen=True)
class Adoption:
    """What `member_adopt` did: `member` is the holder's pass, which holds the External ID now (adopted by this
    call or by a simultaneous one) or, `adopted` False, another one autofill set before its value was corrected;
    `conflict` is set when other members of the holder were left for staff to settle."""

    member: Member
    adopted: bool
    conflict: ExternalIdConflict | None = None


def member_adopt(*, template: PassTemplate, external_id: str) -> Adoption | None:
    """Give `external_id` to the holder's member made before autofill was on, instead of issuing another pass.

    When no member without an External ID matches, the holder's member whose address or number was corrected
    to this one since autofill set its External ID is returned as it is (`adopted` False: an External ID never
    changes; selectors.AutofillValueMembers says when a member counts as that); None when there is neither.

    Of several matches the suggested keeper (the earliest live pass: selectors.KEEPER_ORDER) is adopted and the
    conflict is opened for staff. Race-safe like issuing: the write is `UPDATE … WHERE external_id IS NULL`, and
    the unique constraint on (template, external_id) lets only one member hold the ID, so of simultaneous claims
    (or a claim and a backfill) one adopts and the others find the member that holds it. No call upstream: the
    pass exists, and the mirror is what answers "does this holder have a pass?" (as after a backfill)."""
    found = selectors.autofill_value_members(template=template, external_id=external_id)
    candidates = found.without_external_id
    if not candidates:
        return Adoption(member=found.corrected, adopted=False) if found.corrected else None
    keeper = candidates[0]
    try:
        with transaction.atomic():
            won = Member.objects.filter(pk=keeper.pk, external_id__isnull=True).update(
                external_id=external_id, updated_at=timezone.now()
            )
            if won:
                MemberChange.objects.create(
                    member=keeper,
                    via=MemberChange.Via.ADOPTED,
                    changes={MemberChange.EXTERNAL_ID_KEY: [None, external_id]},
                )
    except IntegrityError:
        won = 0  # a simultaneous claim (or backfill) gave the ID to a member first
    holder = Member.objects.filter(template=template, external_id=external_id).first()
    if holder is None:  # the keeper was given another ID meanwhile (a staff edit): nothing adopted
        return None
    conflict = None
    if len(candidates) > 1:
        conflict = external_id_conflict_open(template=template, external_id=external_id, via="claim")
    return Adoption(member=holder, adopted=bool(won) and holder.pk == keeper.pk, conflict=conflict)


def external_id_conflict_open(*, template: PassTemplate, external_id: str, via: str) -> ExternalIdConflict:
    """The open conflict over `external_id`, recorded now if it was not already (one open row per ID)."""
    found = ExternalIdConflict.objects.filter(template=template, external_id=external_id, resolved_at__isnull=True)
    conflict = found.first()
    if conflict is not None:
        return conflict
    try:
        with transaction.atomic():
            return ExternalIdConflict.objects.create(template=template, external_id=external_id, opened_via=via)
    except IntegrityError:  # opened by a simultaneous claim
        return found.get()


def member_add(
    *,
    template: PassTemplate,
    values: Mapping[str, str],
    external_id: str | None,
    user,
    client: SmartPagesClient | None = None,
) -> IssueResult:
    """Staff's "Add member": an explicit External ID, else the template's autofill value, else none.

    The explicit one is normalised like the CSV column and autofill (selectors.explicit_external_id), so a
    holder added by hand and the same holder's link find one member. Raises InvalidIdentity when autofill
    is on and the typed External ID or the value autofill reads is not valid. A member made before autofill
    was on whose value gives the same External ID is adopted (member_adopt) instead of issuing a second pass.
    """
    external_id = selectors.explicit_external_id(template=template, raw=external_id or "")
    if external_id is None:
        external_id = selectors.external_id_for_values(template=template, values=values)
    if external_id is not None and not Member.objects.filter(template=template, external_id=external_id).exists():
        # The holder's pass from before autofill was on: the same one pass per holder as a claim gets.
        adoption = member_adopt(template=template, external_id=external_id)
        if adoption is not None:
            return IssueResult(member=adoption.member, kind=IssueKind.ALREADY_ENROLLED)
    return member_issue(
        template=template, values=values, external_id=external_id, source=Member.Source.MANUAL, user=user, client=client
    )


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


def member_issue_retry(
    *, member: Member, client: SmartPagesClient | None = None, expected_attempts: int | None = None
) -> IssueRetry:
    """Try again to create the pass of a PENDING member that SmartPages could not take earlier.

    The attempt is claimed first by bumping `issue_attempts` from the value this caller read: of two retries
    that read the same state (a redelivered task and its original), only one POSTs, so a member without an
    External ID (which SmartPages cannot deduplicate) does not get two passes. The result says whether this
    caller made the attempt. The next attempt's time is recorded in the row by the one that made it.

    `expected_attempts` (a retry task passes the count its scheduler left) makes the claim stricter: a task
    that arrives after its chain already moved on finds another count and makes no attempt.
    """
    if member.status != Member.Status.PENDING or member.pass_id is not None:
        return IssueRetry(member=member, attempted=False)
    expected = member.issue_attempts if expected_attempts is None else expected_attempts
    attempt = _attempt_started(attempts=expected + 1)
    claimed = Member.objects.filter(
        pk=member.pk, status=Member.Status.PENDING, pass_id__isnull=True, issue_attempts=expected
    ).update(**attempt, updated_at=timezone.now())
    if not claimed:
        member.refresh_from_db()
        return IssueRetry(member=member, attempted=False)
    for name, value in attempt.items():
        setattr(member, name, value)
    return IssueRetry(member=_member_send(member=member, client=client), attempted=True)


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
            # Due for the sweeps, should the retry below never start (the process dies, the connection breaks
            # and the claim, tried again, finds this member pending): failing left it empty, and a pending
            # member without one was never tried again.
            next_attempt_at=timezone.now() + ATTEMPT_BUDGET,
            updated_at=timezone.now(),
        )
        if won:
            MemberStatusChange.objects.create(
                member=member,
                old=Member.Status.FAILED,
                new=Member.Status.PENDING,
                reason="Claimed again by the holder; issuing again.",
            )
    member.refresh_from_db()
    if not won:
        return member
    with smartpages_client(client, in_request=True) as smartpages:
        retry = member_issue_retry(member=member, client=smartpages)
    return retry.member


# How long one attempt may take before its member counts as due again (its process died mid-attempt): above
# the worker's slowest single attempt (connect retries and the read timeout of SMARTPAGES_TIMEOUT).
ATTEMPT_BUDGET = timedelta(minutes=2)


def member_issue_retry_stale(*, limit: int = 500, client: SmartPagesClient | None = None) -> int:
    """Try again, here, every pending member past its `next_attempt_at` by SWEEP_OVERDUE_AFTER seconds: the
    task `member_issue_retries_send_due` sent was lost (with its worker, or with Redis), or the process making
    the attempt died. Returns how many members were tried."""
    cutoff = timezone.now() - timedelta(seconds=settings.SWEEP_OVERDUE_AFTER)
    stale = list(
        Member.objects.filter(status=Member.Status.PENDING, pass_id__isnull=True, next_attempt_at__lt=cutoff)
        .select_related("template")
        .order_by("next_attempt_at")[:limit]
    )
    if not stale:
        return 0
    with smartpages_client(client) as smartpages:
        for member in stale:
            member_issue_retry(member=member, client=smartpages)
    return len(stale)


def member_issue_retries_send_due(*, limit: int = 500) -> int:
    """A sweep (background.recovery, every SWEEP_INTERVAL): send the retry task of every pending member whose
    next attempt is due. Each send moves `next_attempt_at` on by ATTEMPT_BUDGET first (a compare-and-set on
    the value read), so a member is sent once, however many sweeps run; the attempt then records its own next
    time. Returns how many were sent."""
    now = timezone.now()
    due = Member.objects.filter(status=Member.Status.PENDING, pass_id__isnull=True, next_attempt_at__lte=now)
    sent = 0
    for member_id, attempts, due_at in due.order_by("next_attempt_at").values_list(
        "pk", "issue_attempts", "next_attempt_at"
    )[:limit]:
        if Member.objects.filter(pk=member_id, status=Member.Status.PENDING, next_attempt_at=due_at).update(
            next_attempt_at=now + ATTEMPT_BUDGET
        ):
            enqueue_after_commit(RETRY_TASK, member_id, attempts)
            sent += 1
    return sent


def member_link_pass(*, member: Member, pass_id: str, user, client: SmartPagesClient | None = None) -> Member:
    """Link a member SmartPages refused with a 409 to the pass it already holds there, by its Pass ID.

    For a member whose own earlier attempt most likely made that pass (`pass_link_needed`), or one whose pass
    was made outside the portal. The pass is read first (`GET /api/v1/pass/{id}`) and must be on the member's
    template with the member's External ID, so a typo cannot give a holder someone else's pass. Raises
    MemberError with a sentence for the page.
    """
    if member.status != Member.Status.FAILED or not member.upstream_conflict or member.pass_id is not None:
        raise MemberError("Only a member refused for an External ID conflict can be linked to a pass.")
    try:
        wanted = uuid.UUID(pass_id.strip())
    except ValueError:
        raise MemberError("That is not a Pass ID: paste the pass's ID from SmartPages (a UUID).") from None
    holder = Member.objects.filter(pass_id=wanted).first()
    if holder is not None:
        raise MemberError(f"That pass already belongs to member #{holder.pk}.")
    try:
        with smartpages_client(client, in_request=True) as smartpages:
            found = smartpages.get_pass(str(wanted))
    except NotFound:
        raise MemberError("SmartPages has no pass with that Pass ID.") from None
    except SmartPagesError as exc:
        raise MemberError(f"The pass could not be read from SmartPages; nothing changed. {exc}") from exc
    if found.get("passTemplateId") != str(member.template_id):
        raise MemberError("That pass belongs to another template; nothing changed.")
    if found.get("externalIdentifier") != member.external_id:
        raise MemberError(
            f"That pass has External ID “{found.get('externalIdentifier') or 'none'}”, not this "
            f"member's “{member.external_id or 'none'}”; nothing changed."
        )
    with transaction.atomic():
        try:
            linked = Member.objects.filter(pk=member.pk, status=Member.Status.FAILED, pass_id__isnull=True).update(
                status=Member.Status.ISSUED,
                pass_id=wanted,
                upstream=found,
                upstream_conflict=False,
                pass_link_needed=False,
                failure_reason="",
                updated_at=timezone.now(),
            )
        except IntegrityError:
            raise MemberError("That pass was just linked to another member; nothing changed.") from None
        if linked:
            MemberStatusChange.objects.create(
                member=member,
                old=Member.Status.FAILED,
                new=Member.Status.ISSUED,
                reason=f"Linked by staff to pass {wanted} on SmartPages.",
                by=acting_user(user),
            )
    member.refresh_from_db()
    if not linked:
        raise MemberError("This member changed meanwhile; nothing was linked. Reload the page.")
    return member


def _attempt_started(*, attempts: int) -> dict:
    """The columns that record an attempt before it is sent: its number, when it began, and when the member
    is due again should this attempt never record an outcome."""
    now = timezone.now()
    return {"issue_attempts": attempts, "send_started_at": now, "next_attempt_at": now + ATTEMPT_BUDGET}


# A write after a successful POST is tried this many times, each on a fresh database connection: the pass
# exists upstream now, and losing its Pass ID would leave the holder without it (or with a second pass later).
OUTCOME_WRITE_TRIES = 4


def _write_outcome(write: Callable[[], T], *, member: Member) -> T:
    return on_a_working_connection(
        write, tries=OUTCOME_WRITE_TRIES, subject=f"the outcome of member {member.pk} (pass {member.pass_id})"
    )


def _member_send(*, member: Member, client: SmartPagesClient | None) -> Member:
    """POST the member's pass and record the outcome. The attempt is already recorded (`_attempt_started`
    saved with the row or the retry's claim), so a crash anywhere below leaves a member that says an attempt
    may have gone out and falls due for the sweep."""
    body = {
        "passTemplateId": str(member.template_id),
        "inputFields": [{"identifier": key, "value": value} for key, value in member.values.items()],
    }
    if member.external_id is not None:
        body["externalIdentifier"] = member.external_id
    body.update(member.pass_values or {})
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
            reason = (
                f"SmartPages could not be reached in {member.issue_attempts} attempts; the pass was not "
                f"created. Last error: {exc}"
            )
            return _member_fail(member=member, reason=reason, error=exc)
        logger.warning("Pass for member %s not created yet: %s", member.pk, exc)
        member.last_error, member.send_started_at = str(exc), None
        member.next_attempt_at = timezone.now() + timedelta(seconds=issue_retry_delay(member.issue_attempts))
        _write_outcome(
            lambda: member.save(update_fields=["last_error", "send_started_at", "next_attempt_at", "updated_at"]),
            member=member,
        )
        return member
    except Conflict as exc:
        member.upstream_conflict = True
        member.upstream = {"error": exc.body} if exc.body is not None else {}
        # An earlier attempt of ours may have made this pass (only its reply was lost), and the 409 did not
        # name it: most likely the holder's own pass, so a manager links it rather than the holder being told
        # someone else has it.
        member.pass_link_needed = member.issue_attempts > 1 and member.external_id is not None
        if member.external_id is None or _conflict_names_a_field(exc):
            # Not about an External ID (the member has none, or SmartPages named a unique field): say what clashed.
            member.pass_link_needed = False
            reason = (
                f"SmartPages refused the pass as a conflict with another pass of this template: {_conflict_detail(exc)}"
            )
        elif member.pass_link_needed:
            reason = (
                f"SmartPages already has a pass with External ID “{member.external_id}” on this template, most "
                "likely made by an earlier attempt of the portal whose reply was lost; SmartPages did not say "
                "which pass it is. Find it on SmartPages and link it here by its Pass ID."
            )
        else:
            reason = (
                f"SmartPages already has a pass with External ID “{member.external_id}” on this template, made "
                "outside the portal. It was not linked to this member; link it here by its Pass ID if it is theirs."
            )
        return _member_fail(member=member, reason=reason, error=exc)
    except PermanentError as exc:
        member.upstream = {"error": exc.body} if exc.body is not None else {}
        return _member_fail(member=member, reason=str(exc), error=exc)
    try:
        pass_id = uuid.UUID(str(reply.get("id")))
    except (AttributeError, ValueError):
        member.upstream = reply if isinstance(reply, dict) else {}
        return _member_fail(
            member=member, reason="SmartPages created the pass but its reply had no Pass ID.", error=None
        )
    member.pass_id, member.upstream, member.last_error = pass_id, reply, ""
    member.status, member.send_started_at, member.next_attempt_at = Member.Status.ISSUED, None, None

    def write() -> None:
        with transaction.atomic():
            member.save(
                update_fields=[
                    "pass_id",
                    "upstream",
                    "status",
                    "last_error",
                    "send_started_at",
                    "next_attempt_at",
                    "updated_at",
                ]
            )
            MemberStatusChange.objects.create(
                member=member, old=Member.Status.PENDING, new=Member.Status.ISSUED, reason="Pass created on SmartPages."
            )

    _write_outcome(write, member=member)
    return member


def _conflict_names_a_field(error: Conflict) -> bool:
    return isinstance(error.body, dict) and bool(error.body.get("field") or error.body.get("identifier"))


def _conflict_detail(error: Conflict) -> str:
    """What SmartPages said clashed (its error body is undocumented: its message, and the field if named)."""
    body = error.body if isinstance(error.body, dict) else {}
    message = str(body.get("error") or body.get("message") or "no reason given").strip()[:300]
    field = body.get("field") or body.get("identifier")
    return f"{message} (field “{field}”)." if field else f"{message}."


def _adopt_after_lost_reply(*, member: Member, smartpages: SmartPagesClient, error: Conflict) -> dict | None:
    """On a retry, a 409 may mean our own earlier POST arrived and only its reply was lost. When SmartPages
    names the pass and it carries this member's External ID, that pass is this member's: adopt it. (The API
    reference leaves the 409 body undocumented; the sandbox names the pass as `passId`.) A read that fails
    transiently raises, so the member stays pending and the next attempt asks again."""
    if member.issue_attempts <= 1 or not isinstance(error.body, dict) or not error.body.get("passId"):
        return None
    try:
        found = smartpages.get_pass(str(error.body["passId"]))
    except PermanentError:
        return None
    if found.get("externalIdentifier") == member.external_id and found.get("passTemplateId") == str(member.template_id):
        return found
    return None


def _member_fail(*, member: Member, reason: str, error: Exception | None) -> Member:
    logger.warning("Pass for member %s refused by SmartPages: %s", member.pk, error or reason)
    old = member.status
    member.status, member.failure_reason = Member.Status.FAILED, reason
    member.send_started_at = member.next_attempt_at = None

    def write() -> None:
        with transaction.atomic():
            member.save(
                update_fields=[
                    "status",
                    "failure_reason",
                    "upstream",
                    "upstream_conflict",
                    "pass_link_needed",
                    "send_started_at",
                    "next_attempt_at",
                    "updated_at",
                ]
            )
            MemberStatusChange.objects.create(member=member, old=old, new=Member.Status.FAILED, reason=reason)

    _write_outcome(write, member=member)
    return member
