"""The holder's side of a SmartPass link: what a claim page shows (selectors) and what a claim does (services).

A link is self-contained (see tokens.py), so nothing here needs the LinkBatch row: a claim works after its
batch is gone. The database decides every race: Member's unique constraints on (template, external_id)
and on claim_nonce mean two simultaneous claims can never both create a member, and the upstream
`POST /api/v1/pass` happens only for the one that did (members.services.issuing.member_issue).

GET never creates anything (mail scanners and link previews open links; it only records a row's first open
for the batch funnel, links.services.opens); only `claim_submit` makes members.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone, translation

from background.enqueue import enqueue_after_commit
from members import selectors as member_selectors
from members.identity import InvalidIdentity
from members.models import AutofillSetting, Member, MemberChange
from members.rows import row_or_none
from members.services import InvalidMemberValues, IssueRefused, UniqueValuesTaken, pass_links
from members.services.issuing import IssueKind, member_adopt, member_issue, member_reissue_failed
from members.validation import FieldSpec, TemplateRules, validate_values
from templates_sync.client import SmartPagesClient
from templates_sync.models import PassTemplate, SyncRun

from . import passkit, tokens
from .keyring import link_keys
from .models import LinkBatch, LinkClaim
from .services.claim_days import claim_day_add

logger = logging.getLogger(__name__)

# Formats whose values are masked on the claim page: a forwarded link or a look over the shoulder should
# not give away a holder's address, number or kennitala. Names stay readable: they are how a holder
# recognises that the link is theirs.
_MASKED_FORMATS = {"EMAIL", "PHONE_NUMBER", "KENNITALA"}
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_PASS_PAGE_SALT = "links.pass-page"


class ClaimUnavailable(Exception):
    """The link is authentic but its template is not in the mirror (never synced, or the mirror was reset).
    The message is for logs; the holder sees a friendly "no longer available" page."""


# --- tokens -----------------------------------------------------------------------------------------------------
def claim_payload_from_token(*, token: str) -> tokens.LinkPayload | None:
    """The link's payload, or None for any token that does not decode (tampered, truncated, foreign key,
    expired, garbage). Callers answer every None the same way, so a page never hints which check failed."""
    try:
        return tokens.decode(token, link_keys())
    except tokens.InvalidToken as exc:
        # The reason is a fixed phrase from tokens.decode; the token itself is never logged.
        logger.info("SmartPass link refused: %s", exc)
        return None


# --- what the claim page shows -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrefilledValue:
    label: str
    shown: str  # masked for email, phone and kennitala


@dataclass
class ClaimContext:
    payload: tokens.LinkPayload
    template: PassTemplate
    specs: list[FieldSpec]
    rules: TemplateRules
    prefilled: list[PrefilledValue]
    # Mandatory MEMBER fields the link has no value for: the holder types them in.
    asked: list[FieldSpec]
    # The template's "already enrolled" message ('' when staff set none).
    already_enrolled_message: str = ""
    # The template's autofill setting, read once per request (the page, the claim and its External ID use it).
    autofill: AutofillSetting | None = None
    # Why the template issues no new pass now ('' when it does): the holder of a pass this link names still gets it.
    refusal: str = ""


def claim_context_for(*, payload: tokens.LinkPayload) -> ClaimContext:
    """Everything the claim page needs. Raises ClaimUnavailable when the template is not in the mirror; one that
    issues no new pass now says why in `refusal` (see claim_unavailable)."""
    found = member_selectors.template_with_autofill_setting(template_id=payload.template_id)
    if found is None:
        # Authentic link, unknown template: it was never mirrored (or the mirror was reset). Nothing to issue.
        raise ClaimUnavailable(f"template {payload.template_id} is not in the mirror")
    template, autofill = found
    specs = member_selectors.template_field_specs(template=template)
    prefilled, asked = [], []
    for spec in specs:
        value = (payload.fields.get(spec.identifier) or "").strip()
        if value:
            prefilled.append(PrefilledValue(label=spec.name, shown=masked_value(spec.format, value)))
        elif spec.asked_of_holder:
            asked.append(spec)
    return ClaimContext(
        payload=payload,
        template=template,
        specs=specs,
        rules=member_selectors.template_rules(template=template),
        prefilled=prefilled,
        asked=asked,
        already_enrolled_message=already_enrolled_message_for(template=template, setting=autofill),
        autofill=autofill,
        refusal=template.issue_refusal_reason,
    )


# A pass the link names is shown without issuing anything when its template gives out no new pass, or the link's
# values break a rule added since: one the holder has (live or redeemed), or a cancelled one (its page says so). Not
# a failed member: showing it means issuing it again.
_SHOWN_WITHOUT_ISSUING = (*member_selectors.HOLDER_PASS_STATUSES, Member.Status.VOIDED)


def pass_shown_without_issuing(*, context: ClaimContext, existing: Member | None) -> bool:
    """Whether `existing` (claim_existing_member: the pass this link names) is shown even though the template would
    issue no new pass, or the link's values would not. An issuer who stops giving out passes, or adds a rule, still
    lets the holders who have one see it; not when the template itself is voided or gone on SmartPages (its passes
    most likely are too)."""
    template = context.template
    if existing is None or existing.status not in _SHOWN_WITHOUT_ISSUING:
        return False
    return template.removed_at is None and template.status != PassTemplate.Status.VOIDED


def claim_unavailable(*, context: ClaimContext, existing: Member | None) -> bool:
    """Whether this link leads nowhere now: its template issues no new pass and the link names no pass that is shown
    without issuing (pass_shown_without_issuing)."""
    return bool(context.refusal) and not pass_shown_without_issuing(context=context, existing=existing)


def link_values_unusable(*, context: ClaimContext) -> bool:
    """Whether the link's own values cannot issue a pass whatever the holder types: a value the template refuses
    (a link made by hand, or one made before the template changed). The claim page says so at once rather than
    after the holder filled the form in; claim_submit checks the same again when the form is posted."""
    link_values, _pass_values = passkit.split_pass_values(context.payload.fields)
    _clean, errors, _warnings = validate_values(
        context.specs, link_values, rules=context.rules, region=settings.PHONE_DEFAULT_REGION
    )
    return bool(_errors_of_the_link(errors, context=context))


def _errors_of_the_link(errors: Mapping[str, str], *, context: ClaimContext) -> dict[str, str]:
    """The errors on values the holder was not asked for: the link's own, which only the issuer can fix."""
    asked = {spec.identifier for spec in context.asked}
    return {identifier: message for identifier, message in errors.items() if identifier not in asked}


def already_enrolled_message_for(
    *, template: PassTemplate, language: str | None = None, setting: AutofillSetting | None = None
) -> str:
    """The message staff set for holders who already have a pass, in the page's language (the request's,
    activated by LocaleMiddleware, unless given), else in the other one; '' when none (the page words its own)."""
    if setting is None:
        # The per-process copy (on PostgreSQL one short version check; SQLite reads the template and its setting
        # afresh), not a query of its own: every holder of a link shared in a group chat lands on its pass page
        # with this message.
        found = member_selectors.template_with_autofill_setting(template_id=template.pk)
        setting = found[1] if found is not None else member_selectors.autofill_setting_for(template=template)
    return setting.message_for(language or translation.get_language())


def masked_value(field_format: str, value: str) -> str:
    """`laura.loopy@example.com` → `l•••••••••y@example.com`; `+3546151234` → `+••••••••34`."""
    if field_format.upper() not in _MASKED_FORMATS:
        return value
    if field_format.upper() == "EMAIL" and "@" in value:
        local, _, domain = value.rpartition("@")
        hidden = local[0] + "•" * max(len(local) - 2, 1) + local[-1] if len(local) > 2 else local[:1] + "•"
        return f"{hidden}@{domain}"
    # Phone numbers and kennitölur: every digit but the last two.
    digits_seen, total_digits, shown = 0, sum(ch.isdigit() for ch in value), []
    for ch in value:
        if ch.isdigit():
            digits_seen += 1
            shown.append(ch if digits_seen > total_digits - 2 else "•")
        else:
            shown.append(ch)
    return "".join(shown)


def claim_existing_member(*, context: ClaimContext) -> Member | None:
    """The member a claim of this link would show, when the link itself already decides the External ID
    (explicit, or autofill from a value in the link). Read-only: the GET page words its button with it."""
    row_key = single_use_claim_key(payload=context.payload)
    if row_key is not None:
        found = row_or_none(Member.objects.filter(template=context.template, claim_nonce=row_key))
        if found is not None:
            return found
    try:
        external_id = _link_external_id(context=context)
    except InvalidIdentity:
        return None
    if external_id is None:
        return None
    found = row_or_none(Member.objects.filter(template=context.template, external_id=external_id))
    if found is None:
        found = _member_with_the_links_id_as_written(context=context, external_id=external_id)
    if found is None:
        # A pass made before autofill was on, which the claim would adopt, or one whose address was corrected to
        # this one (member_adopt).
        found = member_selectors.autofill_value_members(template=context.template, external_id=external_id).first
    return found


def _member_with_the_links_id_as_written(*, context: ClaimContext, external_id: str | None) -> Member | None:
    """The member holding the link's own External ID as the link carries it, when the claim reads it otherwise now
    (`external_id`): a CSV column gave "Gudrun@Example.is" while autofill was off, so her member holds it as
    written, and autofill switched on since reads "gudrun@example.is". The same link names the same holder."""
    as_written = (context.payload.external_id or "").strip()
    if not as_written or as_written == external_id:
        return None
    return row_or_none(Member.objects.filter(template=context.template, external_id=as_written))


def single_use_claim_key(*, payload: tokens.LinkPayload) -> str | None:
    """The claim key of a single-use link's row (None for other links), stored as the member's claim_nonce.

    Member.claim_nonce is unique in the database, so of simultaneous first claims of one row exactly one
    inserts its member (the others find it), as with a form posted twice. The ':' keeps it apart from the
    nonces a form may post (is_claim_nonce refuses it), so no holder can post their way to a row's pass.
    Batch ids are never reused, so batch and row name one row for good, even after the batch is deleted.
    """
    if not payload.single_use or payload.batch_id is None or payload.row is None:
        return None
    return f"row:{payload.batch_id}:{payload.row}"


def new_claim_nonce() -> str:
    """A one-time value for one rendering of the claim form: the same form posted twice issues once."""
    return secrets.token_urlsafe(18)


def is_claim_nonce(value: str | None) -> bool:
    return bool(value) and bool(_NONCE_RE.match(value))


# --- the claim ----------------------------------------------------------------------------------------------------
class ClaimKind(StrEnum):
    ISSUED = "issued"  # a new member (issued, pending or refused): show its pass page
    SAME_FORM = "same_form"  # this very form was posted before: show what that post made
    ALREADY_ENROLLED = "already_enrolled"  # the link's External ID (or single-use row) had a member: show that pass
    # The External ID came from what the holder typed, not from the link, and a member already has it: the
    # holder is told they are enrolled but sees no pass. Anyone can type someone's address into the form, so a
    # typed value must never open that person's pass; `member` stays None, so no page can show it by mistake.
    ENROLLED_PASS_HIDDEN = "enrolled_pass_hidden"
    FORM_ERRORS = "form_errors"  # the holder's answers need correcting: show the form again
    LINK_PROBLEM = "link_problem"  # the link's own values are unusable: the issuer must fix them
    UNAVAILABLE = "unavailable"  # the template cannot issue any more


# The kinds that end on a pass page.
SHOWS_PASS = frozenset({ClaimKind.ISSUED, ClaimKind.SAME_FORM, ClaimKind.ALREADY_ENROLLED})


@dataclass(frozen=True)
class SendOffer:
    """What the ENROLLED_PASS_HIDDEN page offers instead of the pass: to send its link to the member's address
    on file. `key` names the member for the send form, signed and short-lived; the page shows only masks."""

    key: str
    email_masked: str
    phone_masked: str
    sms_available: bool
    contact_help: str


@dataclass(frozen=True)
class ClaimOutcome:
    """What became of a claim: its `kind`, the member whose pass to show (for the SHOWS_PASS kinds), for
    FORM_ERRORS the asked-field identifier → holder-facing sentence, and for ENROLLED_PASS_HIDDEN the offer to
    send the pass to the address on file."""

    kind: ClaimKind
    member: Member | None = None
    errors: dict[str, str] = field(default_factory=dict)
    offer: SendOffer | None = None
    # Unique fields whose value another member already holds (FORM_ERRORS: the holder's; LINK_PROBLEM: the link's).
    taken: frozenset[str] = frozenset()


def claim_submit(
    *,
    context: ClaimContext,
    answers: Mapping[str, str],
    nonce: str,
    client: SmartPagesClient | None = None,
) -> ClaimOutcome:
    """Claim a link: find the holder's member or issue a new pass.

    `answers` are the holder's values for `context.asked` (already checked by the form); the link's own
    values always win for every other field, so a holder cannot change what the issuer put in the link.
    External ID: the link's explicit one, else the template's autofill value, else none. A member found by
    it is shown only when the link decided it; found by a value the holder typed, the outcome is
    ENROLLED_PASS_HIDDEN. A found member that SmartPages refused earlier is issued again. `nonce` is the
    one-time value of the form that was posted: a second post of the same form finds the first's member.

    A single-use link (one pass per row) claims under its row's key instead of the form's nonce: the first
    claim of the row issues, every later one is ALREADY_ENROLLED with that member.

    Must not be called inside a transaction (it calls SmartPages).
    """
    row_key = single_use_claim_key(payload=context.payload)
    claim_key = row_key or nonce
    asked = {spec.identifier for spec in context.asked}
    link_values, pass_values = passkit.split_pass_values(context.payload.fields)
    values = dict(link_values)
    values.update({key: value for key, value in answers.items() if key in asked})

    # Validate here, before any lookup, so a value that cannot issue is reported on the right side: the
    # holder's answers as form errors, the link's values as a link problem.
    clean, errors, _warnings = validate_values(
        context.specs, values, rules=context.rules, region=settings.PHONE_DEFAULT_REGION
    )
    if errors:
        link_errors = _errors_of_the_link(errors, context=context)
        if not link_errors:
            return ClaimOutcome(kind=ClaimKind.FORM_ERRORS, errors=errors)
        existing = claim_existing_member(context=context)
        if pass_shown_without_issuing(context=context, existing=existing):
            # A rule the link's values break came after this holder's pass (a new allowed domain, a field made
            # required): nothing is issued, so the pass she has is shown.
            return _found(existing, context=context, claim_key=claim_key, single_use=row_key is not None, typed=False)
        logger.warning(
            "SmartPass link for template %s has unusable values: %s",
            context.template.pk,
            "; ".join(link_errors.values()),
        )
        return ClaimOutcome(kind=ClaimKind.LINK_PROBLEM)
    try:
        link_external_id = _link_external_id(context=context)
        external_id = link_external_id
        if external_id is None and asked:
            # The autofill field may be one the holder was asked for.
            external_id = member_selectors.external_id_for_values(
                template=context.template, values=values, setting=context.autofill
            )
    except InvalidIdentity as exc:
        logger.warning("SmartPass link for template %s: the autofill value is unusable: %s", context.template.pk, exc)
        return ClaimOutcome(kind=ClaimKind.LINK_PROBLEM)
    # Only an External ID the link itself carries (or derives from its own values) proves which holder this
    # is: the issuer put it there. One the holder typed proves nothing.
    typed = external_id is not None and link_external_id is None

    existing = _member_for_claim(template=context.template, external_id=external_id, nonce=claim_key)
    if existing is None and link_external_id is not None:
        existing = _member_with_the_links_id_as_written(context=context, external_id=link_external_id)
    if existing is None and external_id is not None:
        # The holder's pass from before autofill was on (or read this field): adopt it rather than issue another;
        # or her pass whose address was corrected to this one: show it.
        adoption = member_adopt(template=context.template, external_id=external_id)
        existing = adoption.member if adoption is not None else None
    if existing is not None:
        return _shown_again(
            existing, context=context, claim_key=claim_key, single_use=row_key is not None, typed=typed, client=client
        )
    try:
        issued = member_issue(
            template=context.template,
            values=values,
            external_id=external_id,
            source=Member.Source.LINK,
            source_batch_id=context.payload.batch_id,
            source_row=context.payload.row,
            claim_nonce=claim_key,
            pass_values=pass_values,
            claimed_at=timezone.now(),
            client=client,
        )
    except IssueRefused as exc:
        logger.info("Claim on template %s refused: %s", context.template.pk, exc)
        return ClaimOutcome(kind=ClaimKind.UNAVAILABLE)
    except UniqueValuesTaken as exc:
        # Another member holds a value of a unique field: the holder's own answer is theirs to change; a value
        # the link carries only the issuer can change.
        taken = frozenset(exc.errors)
        logger.info("Claim on template %s: unique values taken: %s", context.template.pk, ", ".join(sorted(taken)))
        if taken <= asked:
            return ClaimOutcome(kind=ClaimKind.FORM_ERRORS, errors=exc.errors, taken=taken)
        same = _member_of_this_link(
            context=context, clean=clean, unique=min(taken - asked), link_values=link_values, asked=asked
        )
        if same is not None:
            return _shown_again(
                same, context=context, claim_key=claim_key, single_use=row_key is not None, typed=False, client=client
            )
        return ClaimOutcome(kind=ClaimKind.LINK_PROBLEM, taken=taken - asked)
    except InvalidMemberValues as exc:  # validated above; only a template changed mid-claim gets here
        logger.warning("Claim on template %s: values refused: %s", context.template.pk, exc)
        return ClaimOutcome(kind=ClaimKind.LINK_PROBLEM)
    if issued.kind == IssueKind.ALREADY_ENROLLED:
        # Lost a race to a simultaneous claim (same External ID, row or form): show the winner's member.
        return _found(issued.member, context=context, claim_key=claim_key, single_use=row_key is not None, typed=typed)
    # A pending member already has its retry scheduled by member_issue.
    _schedule_refresh_if_refused(member=issued.member)
    _record_claim(context=context, outcome=LinkClaim.Outcome.NEW)
    return ClaimOutcome(kind=ClaimKind.ISSUED, member=issued.member)


def _shown_again(
    existing: Member, *, context: ClaimContext, claim_key: str, single_use: bool, typed: bool, client
) -> ClaimOutcome:
    """The outcome for a holder whose member exists. A member refused upstream is issued again when its holder
    comes back (the cause may be fixed by now); a conflict, pending or issued member is shown as it is."""
    existing = member_reissue_failed(member=existing, client=client)
    _schedule_refresh_if_refused(member=existing)
    return _found(existing, context=context, claim_key=claim_key, single_use=single_use, typed=typed)


def _member_of_this_link(
    *, context: ClaimContext, clean: Mapping[str, str], unique: str, link_values: Mapping[str, str], asked: set[str]
) -> Member | None:
    """The member that holds the link's value of the unique field `unique` and every other value the link
    carries: the same link claimed again. Without autofill a second click would make a second pass (Percy's),
    but a unique field refuses one; the holder is shown the pass they have instead of "this link cannot be
    used". A member with that value and any other value differing is someone else: None (a link problem).
    `link_values` and `asked` are claim_submit's: the link's own values and the fields the holder typed."""
    holder = member_selectors.unique_value_holder(template=context.template, identifier=unique, value=clean[unique])
    if holder is None:
        return None
    carried = [identifier for identifier in link_values if identifier not in asked]

    def holds_the_links_values(values: Mapping[str, str]) -> bool:
        return all(values.get(identifier, "") == clean.get(identifier, "") for identifier in carried)

    # As the member is now, or as it was made (a typo staff fixed since is still in the link): each whole.
    same = holds_the_links_values(holder.values or {}) or holds_the_links_values(_values_when_made(holder))
    return holder if same else None


def _values_when_made(member: Member) -> dict[str, str]:
    """The member's values as it was made: its values now with each change in its history undone (a typo staff
    fixed, a value edited on SmartPages and read back). The link still carries what the member was made from."""
    values = dict(member.values or {})
    for change in member.changes.order_by("-at", "-pk"):  # newest first: the oldest change's old value stays
        for identifier, (old, _new) in change.changes.items():  # {"identifier": [old, new], …}
            if identifier != MemberChange.EXTERNAL_ID_KEY:
                values[identifier] = "" if old is None else str(old)
    return values


def _link_external_id(*, context: ClaimContext) -> str | None:
    """The External ID the link itself decides: its explicit one, else autofill from the link's own values."""
    explicit = _explicit_external_id(context=context)
    if explicit is not None:
        return explicit
    return member_selectors.external_id_for_values(
        template=context.template, values=context.payload.fields, setting=context.autofill
    )


def _explicit_external_id(*, context: ClaimContext) -> str | None:
    """The link's explicit External ID, normalised as staff's "Add member" and the CSV column store one, so
    all three name one holder alike (the CSV already normalised it: doing it again changes nothing)."""
    raw = context.payload.external_id or ""
    try:
        return member_selectors.explicit_external_id(
            template=context.template, raw=raw, setting=context.autofill, issuer_ids=True
        )
    except InvalidIdentity:
        # The link was made while autofill read another format (or none): the CSV checked its External ID
        # against the setting of that day. The issuer's ID still names the holder, as it did then.
        text = raw.strip()
        if len(text) > member_selectors.EXTERNAL_ID_MAX_LENGTH:
            raise
        return text


def _member_for_claim(*, template: PassTemplate, external_id: str | None, nonce: str) -> Member | None:
    """The member this claim should show instead of issuing: the one an earlier post of this same form made
    (its result is shown again; a refusal is tried again), else the one holding the External ID."""
    if external_id is None:
        return row_or_none(Member.objects.filter(claim_nonce=nonce, template=template))
    # One query for both (a unique key each, so at most two rows): many holders on one link each ask.
    found = list(Member.objects.filter(Q(claim_nonce=nonce) | Q(external_id=external_id), template=template).order_by())
    return next((member for member in found if member.claim_nonce == nonce), found[0] if found else None)


# "Last claimed" is read to the minute (the conflict table; the member page). Within the minute it shows, a
# pass's stamp is not written again: a link shared in a group chat brings hundreds of claims of one pass at once,
# and each write would wait on that one row's lock and rewrite all of its indexes (the update is not HOT).
def _minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _mark_claimed(*, member: Member) -> None:
    """Stamp when a holder last reached this pass: the conflict table's "last claimed"."""
    now = timezone.now()
    if member.last_claimed_at is not None and _minute_of(member.last_claimed_at) == _minute_of(now):
        return
    member.last_claimed_at = now
    Member.objects.filter(pk=member.pk).update(last_claimed_at=now)


def _found(member: Member, *, context: ClaimContext, claim_key: str, single_use: bool, typed: bool) -> ClaimOutcome:
    _record_claim(context=context, outcome=LinkClaim.Outcome.EXISTING)
    _mark_claimed(member=member)
    found_by_external_id = member.claim_nonce != claim_key
    if not found_by_external_id:
        # The same form again, or a single-use row claimed again (its key came from the link, not the holder).
        return ClaimOutcome(kind=ClaimKind.ALREADY_ENROLLED if single_use else ClaimKind.SAME_FORM, member=member)
    if typed:
        # Not this form's own member (a double tap would carry its nonce): maybe someone else's pass. Never shown;
        # its link can go to the address on file, which reaches the real holder whoever typed it.
        return ClaimOutcome(kind=ClaimKind.ENROLLED_PASS_HIDDEN, offer=send_offer_for(member=member))
    return ClaimOutcome(kind=ClaimKind.ALREADY_ENROLLED, member=member)


def _schedule_refresh_if_refused(*, member: Member) -> None:
    if member.status == Member.Status.FAILED and not member.upstream_conflict:
        # SmartPages refused: most often the template changed there since the last sync (voided, issuing
        # disabled, a field added). Refresh it so the next holder gets the "no longer available" page
        # instead of another refusal.
        _schedule_template_refresh(template_id=str(member.template_id))


def _schedule_template_refresh(*, template_id: str) -> None:
    enqueue_after_commit("templates_sync.refresh_template", template_id, trigger=SyncRun.Trigger.CLAIM)


def _record_claim(*, context: ClaimContext, outcome: str) -> None:
    """Record a claim for the charts, and count one that showed an existing pass on its batch row (the staff
    batch page). A link outlives its batch: no row, nothing to count. One UPDATE with F(): concurrent claims
    never lose a count."""
    payload = context.payload
    with transaction.atomic():  # the claim and its day's count (the dashboard's roll-up) together or not at all
        claim = LinkClaim.objects.create(
            template=context.template, batch_id=payload.batch_id, row=payload.row, outcome=outcome
        )
        claim_day_add(day=timezone.localdate(claim.at))
    if outcome == LinkClaim.Outcome.EXISTING and payload.batch_id is not None:
        LinkBatch.objects.filter(pk=payload.batch_id).update(duplicate_claims=F("duplicate_claims") + 1)


# --- counts for staff --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchClaimCounts:
    members_created: int  # members whose claim came through one of the batch's links
    duplicates_prevented: int  # claims that found the holder's member (External ID, or the same form twice)

    @property
    def claims(self) -> int:
        """Claims that ended with a pass page: each either made a member or found one."""
        return self.members_created + self.duplicates_prevented


def link_batch_claim_counts(*, batch: LinkBatch) -> BatchClaimCounts:
    """What holders did with a batch's links (the staff batch page)."""
    created = Member.objects.filter(source_batch_id=batch.pk, source=Member.Source.LINK).count()
    return BatchClaimCounts(members_created=created, duplicates_prevented=batch.duplicate_claims)


# --- the pass page ----------------------------------------------------------------------------------------------
def pass_page_key(*, member: Member) -> str:
    """The unguessable part of a member's pass page URL: its id signed with the SECRET_KEY. The same member
    always gets the same URL, so a holder's bookmark keeps working; nobody can walk the ids."""
    return signing.Signer(salt=_PASS_PAGE_SALT).sign(str(member.pk))


def pass_page_member(*, key: str) -> Member | None:
    """The member behind a pass page key; None for anything not signed by us (no lookup is made then)."""
    try:
        member_id = int(signing.Signer(salt=_PASS_PAGE_SALT).unsign(key))
    except (signing.BadSignature, ValueError):
        return None
    return row_or_none(Member.objects.select_related("template").filter(pk=member_id))


def pass_replacement(*, member: Member) -> Member | None:
    """The live pass that replaced a voided one for the same holder, or None.

    Recorded when a manager resolved an autofill conflict (`replaced_by`, followed along a chain); for a pass
    voided otherwise (by hand, or by a resolution made before that was recorded), the member holding the
    External ID that the template's autofill setting derives from this member's own values — the same holder —,
    else the one pass whose address was corrected to those values (members.selectors.AutofillValueMembers)."""
    seen = {member.pk}
    current = member
    while current.replaced_by_id is not None and current.replaced_by_id not in seen:
        seen.add(current.replaced_by_id)
        current = Member.objects.filter(pk=current.replaced_by_id).first()
        if current is None:
            break
        if current.status in member_selectors.HOLDER_PASS_STATUSES:
            return current
    try:
        external_id = member_selectors.external_id_for_values(template=member.template, values=member.values or {})
    except InvalidIdentity:
        return None
    if external_id is None:
        return None
    holder = (
        Member.objects.filter(
            template=member.template, external_id=external_id, status__in=member_selectors.HOLDER_PASS_STATUSES
        )
        .exclude(pk__in=seen)
        .first()
    )
    return (
        holder or member_selectors.autofill_value_members(template=member.template, external_id=external_id).corrected
    )


# --- "Send my pass to …" ----------------------------------------------------------------------------------------
_SEND_OFFER_SALT = "links.send-pass-offer"
SEND_OFFER_MAX_AGE = 3600  # seconds a send form stays good


def send_offer_for(*, member: Member) -> SendOffer:
    addresses = pass_links.pass_link_addresses(member=member)
    return SendOffer(
        key=signing.TimestampSigner(salt=_SEND_OFFER_SALT).sign(f"{member.template_id}:{member.pk}"),
        email_masked=addresses.email_masked,
        phone_masked=addresses.phone_masked,
        sms_available=pass_links.pass_link_channels()[pass_links.SMS],
        contact_help=pass_links.contact_help_for(template=member.template),
    )


def _send_offer_member(*, context: ClaimContext, key: str) -> Member | None:
    try:
        value = signing.TimestampSigner(salt=_SEND_OFFER_SALT).unsign(key, max_age=SEND_OFFER_MAX_AGE)
        template_id, member_id = value.split(":")
    except (signing.BadSignature, ValueError):
        return None
    if template_id != str(context.template.pk):
        return None
    return Member.objects.select_related("template").filter(pk=int(member_id), template=context.template).first()


def claim_send_pass(*, context: ClaimContext, key: str, channel: str, pass_url_for, language: str) -> str | None:
    """Send the pass link of the member an ENROLLED_PASS_HIDDEN page offered, to its address on file (never to
    anything in the request). Returns the masked address, or None for an offer key that is not ours, is for
    another link's template or has expired. Raises members' PassLinkNotSent (rate-limited, no such address,
    channel unavailable, sending failed). `pass_url_for(member)` builds the absolute pass page URL."""
    member = _send_offer_member(context=context, key=key)
    if member is None:
        return None
    return pass_links.pass_link_send(member=member, channel=channel, pass_url=pass_url_for(member), language=language)


def send_offer_left(*, context: ClaimContext, key: str, failed_channel: str) -> SendOffer | None:
    """The offer again without `failed_channel` (its address takes no messages from us), when the other channel can
    still send; None when nothing is left to offer (the page then says only how to reach the issuer)."""
    member = _send_offer_member(context=context, key=key)
    if member is None:
        return None
    offer = send_offer_for(member=member)
    if failed_channel == pass_links.EMAIL and offer.phone_masked and offer.sms_available:
        return dataclasses.replace(offer, email_masked="")
    if failed_channel == pass_links.SMS and offer.email_masked:
        return dataclasses.replace(offer, phone_masked="")
    return None
