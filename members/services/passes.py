"""Actions on a member's pass once it exists upstream: void it, read it again, edit its values."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from templates_sync.client import (
    Conflict,
    PermanentError,
    SmartPagesClient,
    TransientError,
    smartpages_client,
)

from .. import selectors
from ..models import (
    Member,
    MemberChange,
    MemberStatusChange,
)
from ..search_text import member_search_fields
from ..validation import validate_field, validate_values
from . import InvalidMemberValues, MemberError, acting_user

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
    return _member_record_upstream(
        member=member, reply=reply, status=Member.Status.VOIDED, reason="Voided by staff.", user=user
    )


def member_refresh(*, member: Member, client: SmartPagesClient | None = None) -> Member:
    """Read the pass again (GET /api/v1/pass/{id}); what changed on SmartPages (voided, redeemed, values
    edited) lands on the member and in its history."""
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
    if not member_apply_pass(member=member, reply=reply):
        member.refreshed_at = timezone.now()
        Member.objects.filter(pk=member.pk).update(refreshed_at=member.refreshed_at)
    return member


# The pass statuses SmartPages answers, as member statuses (UPDATES_OFF is a live pass that takes no updates).
UPSTREAM_STATUSES = {
    "ACTIVE": Member.Status.ISSUED,
    "UPDATES_OFF": Member.Status.ISSUED,
    "REDEEMED": Member.Status.REDEEMED,
    "VOIDED": Member.Status.VOIDED,
}
# Members whose pass SmartPages holds: only these take a status from it (pending and failed have no pass).
# The reason in a member's status history of a change a refresh read (members_changed_by_refresh finds them).
REFRESH_STATUS_REASON = "Changed on SmartPages (read by a refresh)."
PASS_HOLDING_STATUSES = (Member.Status.ISSUED, Member.Status.REDEEMED, Member.Status.VOIDED)


def member_apply_pass(*, member: Member, reply: dict) -> bool:
    """Make the member what SmartPages says its pass is (status and values); True when anything changed.

    A change is recorded in the member's history (status changes and value changes, "Changed on SmartPages")
    and stamps `refreshed_at`. Unchanged, nothing is written here."""
    now = timezone.now()
    status = member.status
    if member.status in PASS_HOLDING_STATUSES:
        upstream_status = "VOIDED" if reply.get("isVoided") else str(reply.get("status") or "")
        status = UPSTREAM_STATUSES.get(upstream_status, member.status)
    values = dict(member.values or {})
    if isinstance(reply.get("inputFields"), list):
        values = {
            str(field.get("identifier")): str(field.get("value"))
            for field in reply["inputFields"]
            if isinstance(field, dict) and field.get("value") not in (None, "")
        }
    changes = _value_changes(member.values or {}, values)
    if status == member.status and not changes:
        return False  # the caller stamps refreshed_at (the refresh job does it once per chunk)
    with transaction.atomic():
        old_status = member.status
        member.upstream, member.status, member.values, member.refreshed_at = reply, status, values, now
        fields = ["upstream", "status", "values", "refreshed_at", "updated_at"]
        if changes:
            specs = selectors.template_field_specs(template=member.template)
            for name, value in member_search_fields(specs=specs, values=_identities_normalised(specs, values)).items():
                setattr(member, name, value)
                fields.append(name)
        member.save(update_fields=fields)
        if old_status != status:
            MemberStatusChange.objects.create(member=member, old=old_status, new=status, reason=REFRESH_STATUS_REASON)
        if changes:
            MemberChange.objects.create(member=member, via=MemberChange.Via.REFRESH, changes=changes)
    return True


def _identities_normalised(specs, values: Mapping[str, str]) -> dict[str, str]:
    """The values with each valid email address and phone number in its normal form, as every entry path of the
    portal stores them. SmartPages keeps what was typed there ("Laura@Example.com", "699 1234"): the member's
    `values` mirror that, but its indexed email and phone copies must hold the normal form, through which a claim
    finds the holder (autofill adoption, a corrected address). A value that is not valid is kept as written."""
    normalised = dict(values)
    for spec in specs:
        value = normalised.get(spec.identifier)
        if value and spec.format.upper() in ("EMAIL", "PHONE_NUMBER"):
            checked = validate_field(spec, value, region=settings.PHONE_DEFAULT_REGION, check_mandatory=False)
            if not checked.error:
                normalised[spec.identifier] = checked.value
    return normalised


def members_changed_by_refresh(*, member_ids, since) -> set[int]:
    """Of `member_ids`, those a read of their pass (member_apply_pass) found changed at or after `since`: from
    their history, which holds every such change."""
    statuses = MemberStatusChange.objects.filter(member_id__in=member_ids, at__gte=since, reason=REFRESH_STATUS_REASON)
    values = MemberChange.objects.filter(member_id__in=member_ids, at__gte=since, via=MemberChange.Via.REFRESH)
    return {*statuses.values_list("member_id", flat=True), *values.values_list("member_id", flat=True)}


def _value_changes(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, list]:
    return {key: [old.get(key), new.get(key)] for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)}


# The template's lockInputFields, in SmartPages' words ("editing input values on passes is disabled").
LOCKED_VALUES_MESSAGE = (
    "This template locks its input fields on SmartPages (editing input values on passes is disabled), so the "
    "values cannot be changed; nothing was changed. Voiding the pass is still possible."
)
# Statuses whose pass can still be edited on SmartPages.
EDITABLE_STATUSES = (Member.Status.ISSUED, Member.Status.REDEEMED)


def member_edit(
    *, member: Member, values: Mapping[str, str], external_id: str | None, user, client: SmartPagesClient | None = None
) -> Member:
    """Correct a holder's values (and set an External ID that was empty): validated like every entry path,
    sent upstream with PUT /api/v1/pass/{id}, then recorded with who, when and old → new.

    An External ID, once set, never changes (as in PassKit). Nothing changes locally unless SmartPages took
    the update; its refusal is raised as a MemberError with its reason. Raises InvalidMemberValues for values
    that fail the template's rules and InvalidIdentity for a new External ID autofill cannot accept (one that
    is unchanged is not checked again)."""
    if member.status not in EDITABLE_STATUSES or member.pass_id is None:
        raise MemberError("Only a member whose pass is issued can be edited.")
    template = member.template
    specs = selectors.template_field_specs(template=template)
    clean, errors, _warnings = validate_values(
        specs, values, rules=selectors.template_rules(template=template), region=settings.PHONE_DEFAULT_REGION
    )
    if errors:
        raise InvalidMemberValues(errors)
    new_values = {key: value for key, value in clean.items() if value != ""}
    changes = _value_changes(member.values or {}, new_values)
    if changes and template.lock_input_fields:
        raise MemberError(LOCKED_VALUES_MESSAGE)
    if changes:
        clashes = selectors.unique_value_clashes(
            template=template,
            values={key: value for key, value in new_values.items() if key in changes},
            exclude_member_id=member.pk,
        )
        if clashes:
            raise InvalidMemberValues(clashes)
    body: dict = {}
    if changes:
        # Every field, emptied ones as "", so SmartPages drops what staff removed.
        body["inputFields"] = [
            {"identifier": spec.identifier, "value": clean.get(spec.identifier, "")} for spec in specs
        ]
    raw_external_id = (external_id or "").strip()
    if member.external_id is not None and raw_external_id in ("", member.external_id):
        # Unchanged, so not validated again: an External ID made under an earlier autofill source (an email
        # while autofill now reads phones) must not freeze the member's values.
        new_external_id = member.external_id
    else:
        new_external_id = selectors.explicit_external_id(template=template, raw=raw_external_id)
    if member.external_id is not None and new_external_id not in (None, member.external_id):
        raise MemberError("The External ID cannot be changed once set.")
    if member.external_id is None and new_external_id is not None:
        if Member.objects.filter(template=template, external_id=new_external_id).exists():
            raise MemberError(f"Another member of this template already has External ID “{new_external_id}”.")
        body["externalIdentifier"] = new_external_id
        changes[MemberChange.EXTERNAL_ID_KEY] = [None, new_external_id]
    if not changes:
        raise MemberError("Nothing to save: the values are as they were.")
    try:
        with smartpages_client(client) as smartpages:
            reply = smartpages.update_pass(str(member.pass_id), body)
    except TransientError as exc:
        logger.warning("Editing member %s: %s", member.pk, exc)
        raise MemberError("SmartPages could not be reached; nothing was changed. Try again in a minute.") from exc
    except Conflict as exc:
        if "externalIdentifier" not in body or (isinstance(exc.body, dict) and exc.body.get("field")):
            detail = exc.body.get("error") if isinstance(exc.body, dict) else None
            field = exc.body.get("field") if isinstance(exc.body, dict) else None
            raise MemberError(
                f"SmartPages refused the change as a conflict with another pass of this template: "
                f"{detail or 'no reason given'}{f' (field “{field}”)' if field else ''}; nothing was changed."
            ) from exc
        raise MemberError(
            f"SmartPages already has another pass with External ID “{new_external_id}” on this "
            "template; nothing was changed."
        ) from exc
    except PermanentError as exc:
        logger.warning("Editing member %s refused: %s", member.pk, exc)
        reason = exc.body.get("error") if isinstance(exc.body, dict) else None
        raise MemberError(f"SmartPages refused the change ({reason or exc.status}); nothing was changed.") from exc
    try:
        with transaction.atomic():
            member.values = new_values
            if "externalIdentifier" in body:
                member.external_id = new_external_id
            for name, value in member_search_fields(specs=specs, values=new_values).items():
                setattr(member, name, value)
            member.upstream = reply if isinstance(reply, dict) else member.upstream
            member.save(
                update_fields=[
                    "values",
                    "external_id",
                    "display_name",
                    "email",
                    "phone",
                    "search_text",
                    "upstream",
                    "updated_at",
                ]
            )
            MemberChange.objects.create(member=member, via=MemberChange.Via.EDIT, changes=changes, by=acting_user(user))
    except IntegrityError as exc:  # another member took the External ID between the check and now
        raise MemberError(f"Another member of this template already has External ID “{new_external_id}”.") from exc
    return member


def _member_record_upstream(*, member: Member, reply: dict, status: str, reason: str, user) -> Member:
    with transaction.atomic():
        old = member.status
        member.upstream, member.status = reply, status
        member.save(update_fields=["upstream", "status", "updated_at"])
        if old != status:
            MemberStatusChange.objects.create(member=member, old=old, new=status, reason=reason, by=acting_user(user))
    return member
