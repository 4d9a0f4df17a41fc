"""Writes to the member mirror: issuing a pass (the one way a member is made), voiding, refreshing, and the
"Auto fill External ID" setting with its audit and backfill.

Network calls to SmartPages never run inside a database transaction: a member is first committed as
PENDING (the unique constraint on (template, external_id) decides races), then the pass is created
upstream, then the outcome is written in a second short transaction.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from templates_sync.client import (
    Conflict,
    PermanentError,
    SmartPagesClient,
    SmartPagesError,
    TransientError,
    smartpages_client,
)
from templates_sync.models import PassTemplate

from . import selectors
from .identity import InvalidIdentity
from .models import (
    AutofillBackfill,
    AutofillChange,
    AutofillSetting,
    AutofillSource,
    Member,
    MemberStatusChange,
)
from .validation import validate_values

logger = logging.getLogger(__name__)


class MemberError(Exception):
    """A refusal a person can act on; `str(error)` is a sentence fit for a page."""


class IssueRefused(MemberError):
    """The template cannot issue passes through the portal (voided, issuing disabled, sold, …)."""


class InvalidMemberValues(MemberError):
    def __init__(self, errors: Mapping[str, str]):
        super().__init__(" ".join(errors.values()))
        self.errors = dict(errors)


class AutofillSettingError(MemberError):
    pass


# --- issuing ---------------------------------------------------------------------------------------------
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
) -> Member:
    """Create a member and its pass upstream; the one way a member comes to be.

    Returns the member. When a member of this template already has `external_id`, that member is returned
    as it is, with no upstream call, and its attribute `already_enrolled` is True (False on a new member):
    callers show the existing pass. The same holds for `claim_nonce` (the claim form's one-time value): a
    form posted twice gets the member its first post made. The new member ends ISSUED, FAILED (with
    `failure_reason`; a 409 from SmartPages also sets `upstream_conflict`) or, when SmartPages could not be
    reached, PENDING with a retry task scheduled (after commit) that tries again with backoff.

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
        created_by=_acting_user(user),
        status=Member.Status.PENDING,
        **_search_copies(template=template, values=clean),
    )
    try:
        with transaction.atomic():
            member.save(force_insert=True)
            MemberStatusChange.objects.create(member=member, old="", new=Member.Status.PENDING,
                                              reason="Created.", by=member.created_by)  # fmt: skip
    except IntegrityError:
        existing = Member.objects.filter(template=template, external_id=external_id).first() if external_id else None
        if existing is None and claim_nonce:
            existing = Member.objects.filter(template=template, claim_nonce=claim_nonce).first()
        if existing is None:
            raise
        existing.already_enrolled = True
        return existing
    member.already_enrolled = False
    member = _member_send(member=member, client=client)
    if member.status == Member.Status.PENDING:
        _retry_later(member=member)
    return member


def member_add(*, template: PassTemplate, values: Mapping[str, str], external_id: str | None, user,
               client: SmartPagesClient | None = None) -> Member:  # fmt: skip
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
        _retry_later(member=retry.member)
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
                _retry_later(member=retry.member)
    return len(stale)


def _retry_later(*, member: Member) -> None:
    """Schedule the next attempt of a member left pending (after commit, with backoff)."""
    from .tasks import member_issue_retry_later  # the tasks module imports this one

    member_issue_retry_later(member_id=member.pk, attempts_so_far=member.issue_attempts)


def _acting_user(user):
    """The person behind an action for audit columns; None for the anonymous holder, a task or a command."""
    return user if getattr(user, "is_authenticated", False) else None


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


def _search_copies(*, template: PassTemplate, values: Mapping[str, str]) -> dict[str, str]:
    """Name, email and phone for search, taken from the first TEXT / EMAIL / PHONE_NUMBER field with a value.

    Validation already normalised EMAIL and PHONE_NUMBER values, so these are the normalised forms."""
    specs = selectors.template_field_specs(template=template)
    copies = {"display_name": "", "email": "", "phone": ""}
    by_format = {"TEXT": "display_name", "EMAIL": "email", "PHONE_NUMBER": "phone"}
    # A field named like a name wins over other text fields (company, car plate …).
    ordered = sorted(specs, key=lambda s: 0 if "name" in s.identifier.lower() or "nafn" in s.label.lower() else 1)
    for spec in ordered:
        key = by_format.get(spec.format.upper())
        value = str(values.get(spec.identifier) or "")
        if key and value and not copies[key]:
            copies[key] = value[: Member._meta.get_field(key).max_length]
    return copies


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
                                              by=_acting_user(user))  # fmt: skip
    return member


# --- autofill setting ---------------------------------------------------------------------------------------
def autofill_setting_change(*, template: PassTemplate, source: str, field_identifier: str = "",
                            already_enrolled_message: str = "", user=None, via: str = "page") -> AutofillSetting:  # fmt: skip
    """Change a template's autofill setting, writing an audit row when anything changed.

    The field must be one of the template's EMAIL (or PHONE_NUMBER) input fields; with exactly one such field
    it is chosen for the caller. External IDs of existing members are not touched: see `autofill_backfill_*`.
    """
    if source not in AutofillSource.values:
        raise AutofillSettingError(f"Unknown autofill source “{source}”.")
    field_identifier = (field_identifier or "").strip()
    if source == AutofillSource.OFF:
        field_identifier = ""
    else:
        candidates = [f.identifier for f in selectors.autofill_candidate_fields(template=template, source=source)]
        label = AutofillSource(source).label.lower()
        if not candidates:
            fmt = "EMAIL" if source == AutofillSource.EMAIL else "PHONE_NUMBER"
            raise AutofillSettingError(f"This template has no {fmt} input field, so the {label} cannot be the source.")
        if not field_identifier and len(candidates) == 1:
            field_identifier = candidates[0]
        if field_identifier not in candidates:
            raise AutofillSettingError(
                f"Choose which input field holds the {label}: {', '.join(candidates)}."
                if not field_identifier
                else f"“{field_identifier}” is not a {label} field of this template."
            )
    message = (already_enrolled_message or "").strip()
    with transaction.atomic():
        setting, _ = AutofillSetting.objects.select_for_update().get_or_create(template=template)
        old = (setting.source, setting.field_identifier, setting.already_enrolled_message)
        if old == (source, field_identifier, message):
            return setting
        setting.source, setting.field_identifier, setting.already_enrolled_message = source, field_identifier, message
        setting.updated_by = _acting_user(user)
        setting.updated_at = timezone.now()
        setting.save()
        AutofillChange.objects.create(
            template=template, changed_by=setting.updated_by, changed_via=via,
            old_source=old[0], old_field_identifier=old[1], old_message=old[2],
            new_source=source, new_field_identifier=field_identifier, new_message=message,
        )  # fmt: skip
    return setting


# Up to this many members a backfill runs in the request; above, a Celery task does it with a progress bar.
BACKFILL_INLINE_LIMIT = 2000
BACKFILL_CHUNK = 500
# A queued backfill not started for this long lost its task (a broker restart, an enqueue that failed).
BACKFILL_ABANDONED_AFTER = timedelta(minutes=30)
_BACKFILL_ACTIVE = (AutofillBackfill.Status.QUEUED, AutofillBackfill.Status.RUNNING)


def backfill_abandoned_after() -> timedelta:
    """How long since it was queued (or started) a backfill that has not finished is taken as dead.

    A running backfill cannot outlive Celery's hard time limit (the worker kills the task, and the row is
    left RUNNING), so past that limit there is no more progress to wait for. Never less than
    BACKFILL_ABANDONED_AFTER, so a queued one gets time to reach a busy worker."""
    hard_limit = timedelta(seconds=(getattr(settings, "CELERY_TASK_TIME_LIMIT", None) or 0) + 60)
    return max(BACKFILL_ABANDONED_AFTER, hard_limit)


def autofill_backfill_abandon_stale(*, template: PassTemplate) -> int:
    """Mark the template's queued/running backfills that can no longer finish as FAILED; returns how many.

    Without this a backfill whose task was lost would hold `one_active_backfill_per_template` for good and
    refuse every new one. A task that does start later finds its row finished and does nothing
    (`autofill_backfill_run` only starts a QUEUED or RUNNING row)."""
    now, abandoned_after = timezone.now(), backfill_abandoned_after()
    cutoff = now - abandoned_after
    minutes = int(abandoned_after.total_seconds() // 60)
    return AutofillBackfill.objects.filter(template=template, status__in=_BACKFILL_ACTIVE).filter(
        Q(started_at__lt=cutoff) | Q(started_at__isnull=True, queued_at__lt=cutoff)
    ).update(
        status=AutofillBackfill.Status.FAILED,
        finished_at=now,
        error=f"Abandoned: no progress for over {minutes} minutes (its task was lost or stopped). "
        "Members it did not reach still have no External ID; start the backfill again.",
    )


def autofill_backfill_request(*, template: PassTemplate, user) -> AutofillBackfill:
    """Start a backfill of the saved setting: inline for a small template, else enqueued after commit.

    A backfill left queued or running past `backfill_abandoned_after()` is marked failed first, so a lost
    task cannot block the template's backfills for good. Raises AutofillSettingError when another backfill
    is really under way, or when the task could not be enqueued (the row is then marked failed).
    """
    setting = selectors.autofill_setting_for(template=template)
    if not setting.is_on:
        raise AutofillSettingError("Turn autofill on before filling in External IDs.")
    autofill_backfill_abandon_stale(template=template)
    try:
        with transaction.atomic():
            run = AutofillBackfill.objects.create(template=template, source=setting.source,
                                                  field_identifier=setting.field_identifier,
                                                  requested_by=_acting_user(user))  # fmt: skip
    except IntegrityError:
        raise AutofillSettingError("A backfill of this template is already running.") from None
    eligible = Member.objects.filter(template=template, external_id__isnull=True,
                                     status__in=selectors.BACKFILL_STATUSES).count()  # fmt: skip
    if eligible <= BACKFILL_INLINE_LIMIT:
        return autofill_backfill_run(backfill=run)
    from .tasks import autofill_backfill  # the tasks module imports this one

    def enqueue() -> None:
        try:
            autofill_backfill.delay(run.pk)
        except Exception:  # noqa: BLE001 - the broker is away; the row must not stay "queued" for nothing
            logger.exception("Could not enqueue backfill %s", run.pk)
            AutofillBackfill.objects.filter(pk=run.pk, status=AutofillBackfill.Status.QUEUED).update(
                status=AutofillBackfill.Status.FAILED, finished_at=timezone.now(),
                error="The backfill could not be started: the task queue is unavailable. Try again in a minute.",
            )  # fmt: skip

    transaction.on_commit(enqueue)
    run.refresh_from_db()
    if run.status == AutofillBackfill.Status.FAILED:  # outside a transaction on_commit ran at once
        raise AutofillSettingError(run.error)
    return run


def autofill_backfill_run(*, backfill: AutofillBackfill) -> AutofillBackfill:
    """Give External IDs to the members the preview says can have one; conflicts stay untouched.

    Writes in short transactions of BACKFILL_CHUNK members. The unique constraint stays the judge: a claim
    that took an External ID after the preview makes that one member a conflict, not the whole chunk.
    """
    # Start only a row that is still active, in one UPDATE: a task that reaches a row already marked
    # abandoned (and maybe replaced by a newer backfill) must not revive it next to the new one.
    started_at = timezone.now()
    started = AutofillBackfill.objects.filter(pk=backfill.pk, status__in=_BACKFILL_ACTIVE).update(
        status=AutofillBackfill.Status.RUNNING, started_at=started_at
    )
    if not started:
        backfill.refresh_from_db()
        return backfill
    backfill.status, backfill.started_at = AutofillBackfill.Status.RUNNING, started_at
    try:
        preview = selectors.autofill_preview(template=backfill.template, source=backfill.source,
                                             field_identifier=backfill.field_identifier)  # fmt: skip
        backfill.total = preview.eligible
        backfill.conflicts = preview.conflicting_members
        backfill.invalid = len(preview.invalid)
        backfill.empty = preview.empty
        backfill.done = backfill.conflicts + backfill.invalid + backfill.empty
        backfill.save(update_fields=["total", "conflicts", "invalid", "empty", "done"])
        items = list(preview.fill.items())
        for start in range(0, len(items), BACKFILL_CHUNK):
            chunk = items[start : start + BACKFILL_CHUNK]
            filled = _backfill_chunk(template=backfill.template, chunk=chunk)
            backfill.filled += filled
            backfill.conflicts += len(chunk) - filled
            backfill.done += len(chunk)
            backfill.save(update_fields=["filled", "conflicts", "done"])
    except Exception:
        logger.exception("Backfill %s failed", backfill.pk)
        backfill.status, backfill.error = AutofillBackfill.Status.FAILED, "The backfill stopped on an unexpected error."
    else:
        backfill.status = AutofillBackfill.Status.SUCCEEDED
    backfill.finished_at = timezone.now()
    # Only over RUNNING: a run that outlived `backfill_abandoned_after()` keeps the FAILED it was given.
    AutofillBackfill.objects.filter(pk=backfill.pk, status=AutofillBackfill.Status.RUNNING).update(
        status=backfill.status, error=backfill.error, finished_at=backfill.finished_at
    )
    backfill.refresh_from_db()
    return backfill


def _backfill_chunk(*, template: PassTemplate, chunk: list[tuple[int, str]]) -> int:
    """Set External IDs for a chunk; returns how many were set. `external_id IS NULL` in the update keeps a
    member that got one meanwhile (External IDs never change)."""
    members = Member.objects.filter(template=template, external_id__isnull=True)
    try:
        with transaction.atomic():
            return sum(members.filter(pk=pk).update(external_id=external_id, updated_at=timezone.now())
                       for pk, external_id in chunk)  # fmt: skip
    except IntegrityError:
        pass
    filled = 0
    for pk, external_id in chunk:
        try:
            with transaction.atomic():
                filled += members.filter(pk=pk).update(external_id=external_id, updated_at=timezone.now())
        except IntegrityError:
            continue
    return filled


__all__ = [
    "AutofillSettingError",
    "InvalidIdentity",
    "InvalidMemberValues",
    "IssueRefused",
    "MemberError",
    "autofill_backfill_abandon_stale",
    "autofill_backfill_request",
    "autofill_backfill_run",
    "autofill_setting_change",
    "member_add",
    "member_issue",
    "issue_retry_delay",
    "IssueRetry",
    "member_issue_retry",
    "member_reissue_failed",
    "member_issue_retry_stale",
    "member_refresh",
    "member_void",
]
