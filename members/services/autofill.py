"""The "Auto fill External ID" setting of a template: changes with their audit, and the backfill of
External IDs for members made before it was on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.recovery import resend_waiting
from templates_sync.models import FORMAT_LABELS, PassTemplate

from .. import selectors
from ..models import (
    AUTOFILL_FIELD_FORMATS,
    AutofillBackfill,
    AutofillChange,
    AutofillSetting,
    AutofillSource,
    ExternalIdConflict,
    Member,
    MemberChange,
)
from . import AutofillSettingError, MemberError, acting_user
from .passes import member_void

logger = logging.getLogger(__name__)


# --- autofill setting ---------------------------------------------------------------------------------------
def autofill_setting_change(
    *,
    template: PassTemplate,
    source: str,
    field_identifier: str = "",
    already_enrolled_message: str = "",
    already_enrolled_message_is: str | None = None,
    contact_help: str | None = None,
    user=None,
    via: str = "page",
) -> AutofillSetting:
    """Change a template's autofill setting, writing an audit row when anything changed.

    The field must be one of the template's EMAIL (or PHONE_NUMBER) input fields; with exactly one such field
    it is chosen for the caller. External IDs of existing members are not touched: see `autofill_backfill_*`.
    `already_enrolled_message` is the English message, `already_enrolled_message_is` the Icelandic one (None
    keeps it as it is). `contact_help` (None keeps it) is how a holder reaches the issuer where their pass link
    cannot be sent to them.
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
            kind = FORMAT_LABELS[AUTOFILL_FIELD_FORMATS[source]].lower()
            raise AutofillSettingError(f"This template has no {kind} input field, so the {label} cannot be the source.")
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
        message_is = (
            setting.already_enrolled_message_is
            if already_enrolled_message_is is None
            else already_enrolled_message_is.strip()
        )
        if contact_help is not None and contact_help.strip() != setting.contact_help:
            setting.contact_help = contact_help.strip()
            setting.save()  # shown to holders only; not part of the autofill audit
        old = (
            setting.source,
            setting.field_identifier,
            setting.already_enrolled_message,
            setting.already_enrolled_message_is,
        )
        if old == (source, field_identifier, message, message_is):
            return setting
        setting.source, setting.field_identifier, setting.already_enrolled_message = source, field_identifier, message
        setting.already_enrolled_message_is = message_is
        setting.updated_by = acting_user(user)
        setting.updated_at = timezone.now()
        setting.save()
        AutofillChange.objects.create(
            template=template,
            changed_by=setting.updated_by,
            changed_via=via,
            old_source=old[0],
            old_field_identifier=old[1],
            old_message=old[2],
            old_message_is=old[3],
            new_source=source,
            new_field_identifier=field_identifier,
            new_message=message,
            new_message_is=message_is,
        )
    return setting


# Up to this many members a backfill runs in the request; above, a Celery task does it with a progress bar.
BACKFILL_INLINE_LIMIT = 2000
BACKFILL_CHUNK = 500
BACKFILL_TASK = "members.autofill_backfill"
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
    return (
        AutofillBackfill.objects.filter(template=template, status__in=_BACKFILL_ACTIVE)
        .filter(Q(started_at__lt=cutoff) | Q(started_at__isnull=True, queued_at__lt=cutoff))
        .update(
            status=AutofillBackfill.Status.FAILED,
            finished_at=now,
            error=f"Abandoned: no progress for over {minutes} minutes (its task was lost or stopped). "
            "Members it did not reach still have no External ID; start the backfill again.",
        )
    )


def autofill_backfill_request(*, template: PassTemplate, user) -> AutofillBackfill:
    """Start a backfill of the saved setting: inline for a small template, else enqueued after commit.

    A backfill left queued or running past `backfill_abandoned_after()` is marked failed first, so a lost
    task cannot block the template's backfills for good. Raises AutofillSettingError when another backfill
    is really under way. A backfill whose task could not be sent stays queued until it is sent again.
    """
    setting = selectors.autofill_setting_for(template=template)
    if not setting.is_on:
        raise AutofillSettingError("Turn autofill on before filling in External IDs.")
    autofill_backfill_abandon_stale(template=template)
    try:
        with transaction.atomic():
            run = AutofillBackfill.objects.create(
                template=template,
                source=setting.source,
                field_identifier=setting.field_identifier,
                requested_by=acting_user(user),
            )
    except IntegrityError:
        raise AutofillSettingError("A backfill of this template is already running.") from None
    eligible = Member.objects.filter(
        template=template, external_id__isnull=True, status__in=selectors.BACKFILL_STATUSES
    ).count()
    if eligible <= BACKFILL_INLINE_LIMIT:
        return autofill_backfill_run(backfill=run)
    enqueue_after_commit(BACKFILL_TASK, run.pk)
    return run


def autofill_backfills_resend_queued() -> int:
    """A sweep (background.recovery): backfills left queued because their task was lost are sent again."""
    return resend_waiting(
        AutofillBackfill.objects.all(), lambda backfill: enqueue_after_commit(BACKFILL_TASK, backfill.pk)
    )


def autofill_backfill_run(*, backfill: AutofillBackfill) -> AutofillBackfill:
    """Give External IDs to the members the preview says can have one; conflicts stay untouched.

    Writes in short transactions of BACKFILL_CHUNK members. The unique constraint stays the judge: a claim
    that took an External ID after the preview makes that one member a conflict, not the whole chunk.
    """
    # Start only a queued row, in one UPDATE: a task that reaches a row already marked abandoned (and maybe
    # replaced by a newer backfill) must not revive it next to the new one, and a second delivery (the sweep's
    # re-send) must not run it twice. A row running for longer than the hard time limit has no live task left
    # (the time limit killed it, or its worker died): a redelivered task takes it over.
    started_at = timezone.now()
    dead_before = started_at - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    started = AutofillBackfill.objects.filter(
        Q(status=AutofillBackfill.Status.QUEUED)
        | Q(status=AutofillBackfill.Status.RUNNING, started_at__lt=dead_before),
        pk=backfill.pk,
    ).update(status=AutofillBackfill.Status.RUNNING, started_at=started_at)
    if not started:
        backfill.refresh_from_db()
        return backfill
    backfill.status, backfill.started_at = AutofillBackfill.Status.RUNNING, started_at
    try:
        preview = selectors.autofill_preview(
            template=backfill.template, source=backfill.source, field_identifier=backfill.field_identifier
        )
        backfill.total = preview.eligible
        backfill.conflicts = preview.conflicting_members
        backfill.invalid = len(preview.invalid)
        backfill.empty = preview.empty
        backfill.done = backfill.conflicts + backfill.invalid + backfill.empty
        backfill.save(update_fields=["total", "conflicts", "invalid", "empty", "done"])
        external_id_conflicts_open(
            template=backfill.template, external_ids=[c.external_id for c in preview.conflicts], via="backfill"
        )
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
            return sum(
                members.filter(pk=pk).update(external_id=external_id, updated_at=timezone.now())
                for pk, external_id in chunk
            )
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


# --- conflicts ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConflictResolution:
    kept: Member
    excluded: int  # members left without the External ID, no longer listed as conflicts
    voided: int
    void_errors: list[str]


def autofill_conflict_resolve(
    *, template: PassTemplate, external_id: str, keep_member_id: int, void_others: bool, user
) -> ConflictResolution:
    """Settle one autofill conflict: the chosen member keeps (or gets) the External ID; the others that share
    it are left without one and no longer listed, each pointing to the kept member (`replaced_by`: a voided
    pass's page leads its holder there); with `void_others` their passes are voided on SmartPages. The
    caller asks for a confirmation naming them first (the view's confirmation step).

    When a member already holds the External ID, it is the one that keeps it: an External ID never moves.
    Raises AutofillSettingError when the conflict is no longer there (its open record is closed then) or the
    choice is not part of it."""
    group = selectors.autofill_conflict_group(template=template, external_id=external_id)
    if group is None:
        _conflict_close(template=template, external_id=external_id, kept=None, user=user)
        raise AutofillSettingError(f"There is no conflict over “{external_id}” any more; the list is refreshed.")
    if group.holder is not None and keep_member_id != group.holder.pk:
        raise AutofillSettingError(
            "A member already holds this External ID, and an External ID never moves: keep that member."
        )
    if keep_member_id not in {member.pk for member in group.members}:
        raise AutofillSettingError("Choose one of the members in this conflict.")
    others = [member.pk for member in group.others(keep_member_id)]
    with transaction.atomic():
        kept = Member.objects.select_for_update().get(pk=keep_member_id, template=template)
        if kept.external_id is None:
            kept.external_id = external_id
            kept.save(update_fields=["external_id", "updated_at"])
            MemberChange.objects.create(
                member=kept,
                via=MemberChange.Via.AUTOFILL,
                by=acting_user(user),
                changes={MemberChange.EXTERNAL_ID_KEY: [None, external_id]},
            )
        excluded = Member.objects.filter(pk__in=others, external_id__isnull=True).update(
            autofill_excluded=True, replaced_by=kept, updated_at=timezone.now()
        )
        _conflict_close(template=template, external_id=external_id, kept=kept, user=user)
    voided, errors = 0, []
    if void_others:
        for member in Member.objects.filter(pk__in=others, status=Member.Status.ISSUED).select_related("template"):
            try:
                member_void(member=member, user=user)
            except MemberError as exc:
                errors.append(f"{member}: {exc}")
            else:
                voided += 1
    return ConflictResolution(kept=kept, excluded=excluded, voided=voided, void_errors=errors)


def _conflict_close(*, template: PassTemplate, external_id: str, kept: Member | None, user) -> None:
    selectors.open_conflicts(template=template).filter(external_id=external_id).update(
        resolved_at=timezone.now(), resolved_by=acting_user(user), kept=kept
    )


def external_id_conflicts_close_settled(*, template: PassTemplate, external_ids) -> int:
    """Close open conflicts that are no longer conflicts (the caller checked: autofill_conflict_group is None)."""
    return (
        selectors.open_conflicts(template=template)
        .filter(external_id__in=list(external_ids))
        .update(resolved_at=timezone.now())
    )


def external_id_conflicts_open(*, template: PassTemplate, external_ids: list[str], via: str) -> None:
    """Record these conflicts as open (those already open stay as they are), so the dashboard and the
    template page show them until a manager resolves them."""
    ExternalIdConflict.objects.bulk_create(
        [
            ExternalIdConflict(template=template, external_id=external_id, opened_via=via)
            for external_id in external_ids
        ],
        ignore_conflicts=True,
    )
