"""Reads of the member mirror and of the autofill setting, for pages, the claim flow and the CSV import.

Why one module of ~760 lines: every read the other apps make of members goes through `members.selectors`
(25 importers: links' claim flow and CSV chunks, portal's dashboard, the views, the tests), and its four
sections share the model imports and little else — template rules, autofill (setting, preview, conflicts),
the member list (search, filters, pages: half the module), and the counts the dashboard reads. Split, it
would become a package re-exporting these names, as members/services/ is; that split waits for a quiet
moment, because the list section is where the search and sort work of other branches lands, and moving it
while they change it would turn each of their merges into a conflict over a moved file.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Count, F, Func, Q, QuerySet, Sum, TextField, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Collate, Reverse, StrIndex
from django.db.models.lookups import GreaterThan
from django.utils import timezone

from templates_sync.models import InputField, PassTemplate

from . import template_rows
from .collation import ICELANDIC_COLLATION
from .identity import InvalidIdentity, display_value, external_id_for, normalise_email, normalise_phone
from .models import (
    AUTOFILL_FIELD_FORMATS,
    AutofillBackfill,
    AutofillChange,
    AutofillSetting,
    AutofillSource,
    ExternalIdConflict,
    Member,
    MemberChange,
    MemberStatusChange,
    MemberStatusCount,
    TemplateMemberCount,
)
from .search_text import anchors_tsquery, search_key
from .validation import FieldSpec, TemplateRules

MEMBER_PAGE_SIZE = 50


# --- template rules ------------------------------------------------------------------------------------------
def template_field_specs(*, template: PassTemplate) -> list[FieldSpec]:
    """The template's input fields as validation specs, in upstream order."""
    return [
        FieldSpec(identifier=f.identifier, label=f.label, format=f.format, is_mandatory=f.is_mandatory, type=f.type)
        for f in template.input_fields
    ]


def template_rules(*, template: PassTemplate) -> TemplateRules:
    domains = tuple(template.allowed_email_domains) if template.use_email_domain_verification else ()
    return TemplateRules(allowed_email_domains=domains, kennitala_min_age=template.kennitala_age_verification or None)


# --- unique input fields (isUnique) ----------------------------------------------------------------------------
# Members whose pass is live or on its way: a failed member holds no pass and a voided one is void, so their
# values block nobody (should SmartPages think otherwise, its 409 is still handled).
VALUE_HOLDING_STATUSES = (Member.Status.PENDING, Member.Status.ISSUED, Member.Status.REDEEMED)


def _value_holders(*, template: PassTemplate, identifier: str) -> QuerySet:
    """The template's members whose values can block another's, each with its value of `identifier` as
    `held_value`. values ->> 'identifier': any identifier, whatever characters it has (no lookup path is parsed).
    Cast to text so that lookups compare plain text: on a key transform Django's SQLite `__in` wraps every value
    in JSON_EXTRACT(value, '$'), and a phone number or email is not JSON ("malformed JSON", a 500 on every claim
    after the first in `make run`)."""
    return Member.objects.filter(template=template, status__in=VALUE_HOLDING_STATUSES).annotate(
        held_value=Cast(KeyTextTransform(identifier, "values"), output_field=TextField())
    )


def unique_values_held(
    *, template: PassTemplate, values_by_field: Mapping[str, Iterable[str]], exclude_member_id: int | None = None
) -> dict[str, dict[str, str | None]]:
    """For each of the template's unique (`isUnique`) fields, which of the given values a member of the mirror
    already holds: {identifier: {value: that member's External ID or None}}. One query per unique field that
    has values; fields that are not unique are not looked at. SmartPages refuses such a value itself; asking
    the mirror first refuses it before any upstream call, with a reason staff and holders can read."""
    unique = {field.identifier for field in template.input_fields if field.is_unique}
    held: dict[str, dict[str, str | None]] = {}
    for identifier, values in values_by_field.items():
        wanted = sorted({value for value in values if value not in (None, "")})
        if identifier not in unique or not wanted:
            continue
        members = _value_holders(template=template, identifier=identifier).filter(held_value__in=wanted)
        if exclude_member_id is not None:
            members = members.exclude(pk=exclude_member_id)
        for value, external_id in members.values_list("held_value", "external_id"):
            held.setdefault(identifier, {})[str(value)] = external_id
    return held


def unique_value_holder(*, template: PassTemplate, identifier: str, value: str) -> Member | None:
    """The member (pending, issued or redeemed) that holds `value` of the unique field `identifier`, if any."""
    return _value_holders(template=template, identifier=identifier).filter(held_value=value).order_by("pk").first()


def unique_value_clashes(
    *,
    template: PassTemplate,
    values: Mapping[str, str],
    external_id: str | None = None,
    exclude_member_id: int | None = None,
) -> dict[str, str]:
    """{identifier: the sentence saying so} for each unique field whose value another member of the template
    holds. A member with the same `external_id` is this holder, not another (their own pass is shown)."""
    held = unique_values_held(
        template=template,
        values_by_field={identifier: [value] for identifier, value in values.items()},
        exclude_member_id=exclude_member_id,
    )
    labels = {field.identifier: str(field) for field in template.input_fields}
    return {
        identifier: unique_value_taken_message(labels.get(identifier, identifier), values[identifier])
        for identifier, holders in held.items()
        if values[identifier] in holders and (external_id is None or holders[values[identifier]] != external_id)
    }


def unique_value_clashes_many(
    *, template: PassTemplate, rows: list[tuple[Mapping[str, str] | None, str | None]]
) -> dict[int, str]:
    """unique_value_clashes for many (values, External ID) pairs at once (a CSV chunk), one query per unique
    field: {position in `rows`: the sentence(s) saying which values another member holds}."""
    unique = [field for field in template.input_fields if field.is_unique]
    if not unique:
        return {}
    held = unique_values_held(
        template=template,
        values_by_field={
            field.identifier: [values.get(field.identifier) for values, _ in rows if values] for field in unique
        },
    )
    clashes: dict[int, str] = {}
    for position, (values, external_id) in enumerate(rows):
        messages = [
            unique_value_taken_message(str(field), values[field.identifier])
            for field in unique
            if values
            and values.get(field.identifier) in held.get(field.identifier, {})
            and (external_id is None or held[field.identifier][values[field.identifier]] != external_id)
        ]
        if messages:
            clashes[position] = " ".join(messages)
    return clashes


def unique_value_taken_message(label: str, value: str) -> str:
    return (
        f"{label}: “{value}” is already held by another member of this template, and the field is unique on SmartPages."
    )


# --- autofill ------------------------------------------------------------------------------------------------
def template_with_autofill_setting(*, template_id) -> tuple[PassTemplate, AutofillSetting] | None:
    """The template and its autofill setting, as the database holds them now (a claim reads both on every
    request: see template_rows); None when the template is not in the mirror."""
    found = template_rows.template_and_saved_setting(template_id=template_id)
    if found is None:
        return None
    template, saved = found
    return template, _setting_or_off(saved, template=template)


def autofill_setting_for(*, template: PassTemplate) -> AutofillSetting:
    """The template's setting; an unsaved default "off" when none was ever saved."""
    return _setting_or_off(AutofillSetting.objects.filter(template=template).first(), template=template)


def _setting_or_off(saved: AutofillSetting | None, *, template: PassTemplate) -> AutofillSetting:
    if saved is None:
        return AutofillSetting(template=template, source=AutofillSource.OFF)
    # Hand back the caller's template instance: reading `setting.template` would otherwise query the template
    # again on every claim.
    saved.template = template
    return saved


def autofill_candidate_fields(*, template: PassTemplate, source: str) -> list[InputField]:
    """The input fields a source may read: EMAIL fields for email, PHONE_NUMBER fields for phone."""
    wanted = AUTOFILL_FIELD_FORMATS.get(source)
    if wanted is None:
        return []
    return [f for f in template.input_fields if f.format.upper() == wanted]


def autofill_field_identifier(*, setting: AutofillSetting) -> str | None:
    """The identifier the setting reads: the saved one, else the template's only field of that format."""
    if not setting.is_on:
        return None
    candidates = [f.identifier for f in autofill_candidate_fields(template=setting.template, source=setting.source)]
    if setting.field_identifier in candidates:
        return setting.field_identifier
    # The field was renamed or removed upstream since the setting was saved: fall back only when there is
    # no doubt which field is meant.
    return candidates[0] if len(candidates) == 1 else None


def external_id_for_values(
    *, template: PassTemplate, values: Mapping[str, str], setting: AutofillSetting | None = None
) -> str | None:
    """The External ID the template's autofill setting derives from a holder's values.

    None when autofill is off or the value is empty; raises InvalidIdentity for a value that is not an
    email address / phone number (issuing without an External ID would allow duplicates). A caller that has
    read the template's setting already passes it (a claim reads it once per request).
    """
    setting = setting or autofill_setting_for(template=template)
    identifier = autofill_field_identifier(setting=setting)
    if identifier is None:
        return None
    return external_id_for(setting.source, values.get(identifier), region=settings.PHONE_DEFAULT_REGION)


# The longest External ID a member can hold: longer would not fit the column (and no address or number is).
EXTERNAL_ID_MAX_LENGTH = Member._meta.get_field("external_id").max_length


def explicit_external_id(
    *, template: PassTemplate, raw: str, setting: AutofillSetting | None = None, issuer_ids: bool = False
) -> str | None:
    """An External ID a person typed or a file gave (staff's "Add member", a CSV column, a link), as stored.

    With autofill by email or phone it is normalised the same way autofill derives one, so "Laura@X.com"
    typed by staff and "laura@x.com" read by autofill name one holder; otherwise it is only trimmed. None
    for an empty value. Raises InvalidIdentity for a value that is not an email address / phone number when
    autofill reads one, and for one too long to store. A caller doing this for many values (a CSV) passes
    the template's `setting`, read once, to save a query per value.

    `issuer_ids` (a CSV's External ID column and the links made from it): a value that is not an address or
    number is the issuer's own identifier (PassKit's External IDs are member numbers) and is kept as given,
    trimmed: an explicit External ID wins over autofill for its row.
    """
    text = (raw or "").strip()
    if not text:
        return None
    source = (setting or autofill_setting_for(template=template)).source
    if source in (AutofillSource.EMAIL, AutofillSource.PHONE):
        try:
            return external_id_for(source, text, region=settings.PHONE_DEFAULT_REGION)
        except InvalidIdentity:
            if not issuer_ids:
                raise
    if len(text) > EXTERNAL_ID_MAX_LENGTH:
        raise InvalidIdentity(f"{display_value(text)} is longer than {EXTERNAL_ID_MAX_LENGTH} characters.")
    return text


def external_ids_in_use(*, template: PassTemplate, external_ids: Iterable[str]) -> set[str]:
    """Which of these External IDs already belong to a member of the template (queried in chunks)."""
    wanted = [e for e in dict.fromkeys(external_ids) if e]
    found: set[str] = set()
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start : start + 1000]
        found.update(
            Member.objects.filter(template=template, external_id__in=chunk).values_list("external_id", flat=True)
        )
    return found


def autofill_changes(*, template: PassTemplate) -> QuerySet[AutofillChange]:
    return AutofillChange.objects.filter(template=template).select_related("changed_by")


def autofill_backfill_latest(*, template: PassTemplate) -> AutofillBackfill | None:
    return AutofillBackfill.objects.filter(template=template).first()


@dataclass
class AutofillConflict:
    external_id: str
    members: list[tuple[int, str]]  # (member id, display name) of members without an External ID
    taken_by: int | None = None  # the member that already holds this External ID, if any


@dataclass
class AutofillPreview:
    """What turning autofill on would do to a template's existing members."""

    source: str
    field_identifier: str | None
    eligible: int = 0  # issued or pending members without an External ID
    fill: dict[int, str] = field(default_factory=dict)  # member id → External ID it would get
    conflicts: list[AutofillConflict] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (member id, reason)
    empty: int = 0
    already_set: int = 0

    @property
    def would_fill(self) -> int:
        return len(self.fill)

    @property
    def conflicting_members(self) -> int:
        return sum(len(c.members) for c in self.conflicts)


# Only members whose pass is live get an External ID: giving one to a failed or voided member would make a
# later claim show that dead pass instead of issuing a new one.
BACKFILL_STATUSES = (Member.Status.ISSUED, Member.Status.PENDING)
# A claim finds its holder's pass among these: the live ones and a redeemed one (a used coupon is still the holder's
# one pass; issuing another would give a second). A failed member holds no pass, a voided one a dead pass.
HOLDER_PASS_STATUSES = (*BACKFILL_STATUSES, Member.Status.REDEEMED)


def autofill_preview(
    *, template: PassTemplate, source: str | None = None, field_identifier: str | None = None
) -> AutofillPreview:
    """Which members a backfill would fill, and which would collide (never silently merged).

    With no source given, previews the saved setting. Reads ids and values only, in chunks; the maps it
    keeps grow with the members that need an External ID, which is what the page lists anyway.
    """
    setting = autofill_setting_for(template=template)
    if source is not None:
        setting = AutofillSetting(template=template, source=source, field_identifier=field_identifier or "")
    identifier = autofill_field_identifier(setting=setting)
    preview = AutofillPreview(source=setting.source, field_identifier=identifier)
    if identifier is None:
        return preview
    members = Member.objects.filter(template=template)
    taken = dict(members.filter(external_id__isnull=False).values_list("external_id", "id").iterator(chunk_size=5000))
    preview.already_set = len(taken)
    candidates: dict[str, list[tuple[int, str]]] = defaultdict(list)
    rows = (
        members.filter(external_id__isnull=True, status__in=BACKFILL_STATUSES, autofill_excluded=False)
        .order_by("id")
        .values_list("id", "display_name", "values")
    )
    region = settings.PHONE_DEFAULT_REGION
    for member_id, name, values in rows.iterator(chunk_size=2000):
        preview.eligible += 1
        raw = (values or {}).get(identifier)
        try:
            external_id = external_id_for(setting.source, raw if raw is None else str(raw), region=region)
        except InvalidIdentity as exc:
            preview.invalid.append((member_id, str(exc)))
            continue
        if external_id is None:
            preview.empty += 1
            continue
        candidates[external_id].append((member_id, name))
    for external_id, group in candidates.items():
        if len(group) == 1 and external_id not in taken:
            preview.fill[group[0][0]] = external_id
        else:
            preview.conflicts.append(AutofillConflict(external_id, group, taken.get(external_id)))
    preview.conflicts.sort(key=lambda c: c.external_id)
    return preview


# The order in which a holder's passes are offered as the one to keep: the earliest live pass first (issued
# before pending, a redeemed one last, then oldest), the one most likely already in the holder's wallet.
KEEPER_ORDER = (
    # "issued" < "pending" < "redeemed" alphabetically, and they are the only HOLDER_PASS_STATUSES.
    "status",
    "created_at",
    "id",
)


@dataclass(frozen=True)
class AutofillValueMembers:
    """The members of a template holding a pass (HOLDER_PASS_STATUSES) whose autofill value gives an External ID
    they do not hold."""

    # The holder's passes made before autofill was on (or before it read this field), suggested keeper first
    # (KEEPER_ORDER): a claim adopts the first (issuing.member_adopt).
    without_external_id: list[Member]
    # The holder's pass whose address or number was corrected (by staff, or on SmartPages and read back) since autofill
    # set its External ID: a claim shows it as it is (an External ID never changes). Only when exactly one member
    # holds an External ID autofill could have set; an issuer's own ID (a member number) is no sign of a correction,
    # and two such members are two people sharing an address.
    corrected: Member | None

    @property
    def first(self) -> Member | None:
        """The pass a claim would show."""
        return self.without_external_id[0] if self.without_external_id else self.corrected


def autofill_value_members(*, template: PassTemplate, external_id: str) -> AutofillValueMembers:
    """Who else holds the autofill value that gives `external_id` (see AutofillValueMembers).

    Found through the indexed `email`/`phone` copy when the autofill field is the template's first field of its
    format (the copy holds that field's value). Else (templates with two email or phone fields are rare) through
    the JSON value, and only among members without an External ID: a claim must not read all of a template's
    members. Either way each member's own value is checked again, as the backfill derives it."""
    setting = autofill_setting_for(template=template)
    identifier = autofill_field_identifier(setting=setting)
    if identifier is None or not external_id:
        return AutofillValueMembers(without_external_id=[], corrected=None)
    members = Member.objects.filter(template=template, status__in=HOLDER_PASS_STATUSES)
    without_one = Q(external_id__isnull=True, autofill_excluded=False)
    same_format = [f.identifier for f in autofill_candidate_fields(template=template, source=setting.source)]
    column = "email" if setting.source == AutofillSource.EMAIL else "phone"
    if same_format and same_format[0] == identifier:
        members = members.filter(without_one | Q(external_id__isnull=False), **{column: external_id})
        members = members.exclude(external_id=external_id)
    else:
        members = members.filter(without_one, **{f"values__{identifier}": external_id})
    region = settings.PHONE_DEFAULT_REGION
    without, corrected = [], []
    # Those without an External ID first, so that the limit never leaves one out for members holding one.
    for member in members.order_by(F("external_id").asc(nulls_first=True), *KEEPER_ORDER)[:50]:
        try:
            value = external_id_for(setting.source, str((member.values or {}).get(identifier) or ""), region=region)
        except InvalidIdentity:
            continue
        if value != external_id:
            continue
        if member.external_id is None:
            without.append(member)
        elif _set_by_autofill(member.external_id, region=region):
            corrected.append(member)
    # A live pass counts before a redeemed one: a used coupon beside the holder's card does not make them two people.
    live = [member for member in corrected if member.status != Member.Status.REDEEMED]
    corrected = live or corrected
    return AutofillValueMembers(without_external_id=without, corrected=corrected[0] if len(corrected) == 1 else None)


def _set_by_autofill(external_id: str, *, region: str) -> bool:
    """Whether autofill could have set this External ID: an email address or phone number in its normal form."""
    for source in (AutofillSource.EMAIL, AutofillSource.PHONE):
        try:
            if external_id_for(source, external_id, region=region) == external_id:
                return True
        except InvalidIdentity:
            pass
    return False


def autofill_adoption_candidates(*, template: PassTemplate, external_id: str) -> list[Member]:
    """Members of the template without an External ID whose autofill value gives `external_id`, suggested keeper
    first (autofill_value_members)."""
    return autofill_value_members(template=template, external_id=external_id).without_external_id


@dataclass
class ConflictGroup:
    """One holder's passes that an autofill value ties together, for the conflict table: the member holding the
    External ID (if any) first, then those without one, suggested keeper first."""

    external_id: str
    members: list[Member]
    holder: Member | None = None
    open_since: datetime | None = None

    @property
    def keeper(self) -> Member:
        """Who should keep the External ID: its holder (an External ID never moves), else the earliest live
        pass, the one most likely in the holder's wallet."""
        return self.holder or self.members[0]

    def others(self, keep_id: int) -> list[Member]:
        return [member for member in self.members if member.pk != keep_id]


def autofill_conflict_group(*, template: PassTemplate, external_id: str) -> ConflictGroup | None:
    """The members in conflict over `external_id` under the saved setting, or None when there is no conflict
    (any more): a holder of the ID and at least one other member whose value gives it, or two such members."""
    holder = (
        Member.objects.filter(template=template, external_id=external_id).select_related("template").first()
        if external_id
        else None
    )
    candidates = autofill_adoption_candidates(template=template, external_id=external_id)
    if len(candidates) + (holder is not None) < 2:
        return None
    members = ([holder] if holder else []) + candidates
    return ConflictGroup(external_id=external_id, members=members, holder=holder)


def autofill_conflict_groups(*, template: PassTemplate, external_ids: Iterable[str]) -> list[ConflictGroup]:
    """The conflict table's rows for these External IDs (those still in conflict), with when each was opened."""
    opened = dict(
        ExternalIdConflict.objects.filter(template=template, resolved_at__isnull=True).values_list(
            "external_id", "opened_at"
        )
    )
    groups = []
    for external_id in dict.fromkeys(external_ids):
        group = autofill_conflict_group(template=template, external_id=external_id)
        if group is not None:
            group.open_since = opened.get(external_id)
            groups.append(group)
    return groups


def conflict_groups_from_preview(*, preview: AutofillPreview, limit: int = 100) -> list[ConflictGroup]:
    """The conflict table's rows for a preview (of the saved or of a proposed setting): its first `limit`
    conflicts, each member loaded with what the table shows, the holder of the ID first."""
    shown = preview.conflicts[:limit]
    ids = {member_id for c in shown for member_id, _name in c.members} | {c.taken_by for c in shown if c.taken_by}
    loaded = Member.objects.in_bulk(list(ids))
    groups = []
    for conflict in shown:
        holder = loaded.get(conflict.taken_by) if conflict.taken_by else None
        others = sorted(
            (loaded[member_id] for member_id, _name in conflict.members if member_id in loaded),
            key=lambda m: (m.status, m.created_at, m.pk),
        )
        members = ([holder] if holder else []) + others
        if members:
            groups.append(ConflictGroup(external_id=conflict.external_id, members=members, holder=holder))
    return groups


def open_conflicts(*, template: PassTemplate | None = None) -> QuerySet[ExternalIdConflict]:
    """Conflicts opened by claims, backfills or the setting that no manager has resolved yet (a partial index)."""
    conflicts = ExternalIdConflict.objects.filter(resolved_at__isnull=True)
    return conflicts if template is None else conflicts.filter(template=template)


# --- the member list ---------------------------------------------------------------------------------------
SORTS = {
    "-created": ("-created_at", "-id"),
    "created": ("created_at", "id"),
    # Icelandic alphabetical order (members.collation), read from the index of migration 0012 on PostgreSQL.
    "name": (Collate("display_name", ICELANDIC_COLLATION).asc(), "id"),
    "-name": (Collate("display_name", ICELANDIC_COLLATION).desc(), "-id"),
    "email": ("email", "id"),
    "-email": ("-email", "-id"),
    "status": ("status", "-created_at", "-id"),
    "-status": ("-status", "-created_at", "-id"),
}

_PASS_ID_PREFIX = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]*")
PASS_ID_PREFIX_MIN = 8
# A query of only digits this long may be the end of a phone number ("581236" for +354 858 1236).
PHONE_ENDING_DIGITS = (4, 9)
_PHONE_LIKE = re.compile(r"\+?[0-9 ()./\-\u00a0]{5,40}")


@dataclass(frozen=True)
class MemberFilters:
    q: str = ""
    template: str = ""
    status: str = ""
    source: str = ""
    batch: str = ""
    created_from: str = ""
    created_to: str = ""
    has_external_id: str = ""  # "yes" | "no" | ""
    older_than: str = ""  # minutes: members created longer ago than this (the dashboard's "stuck" flags)
    sort: str = "-created"

    FIELDS = (
        "q",
        "template",
        "status",
        "source",
        "batch",
        "created_from",
        "created_to",
        "has_external_id",
        "older_than",
        "sort",
    )

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> MemberFilters:
        return cls(**{name: str(query.get(name, "") or "").strip() for name in cls.FIELDS})

    @property
    def is_filtered(self) -> bool:
        return any(getattr(self, name) for name in self.FIELDS if name != "sort")


def member_search_condition(query: str) -> Q:
    """One search box for every way staff look a member up:

    - a name or any part of an email (local part, domain), accents, case and Icelandic letters folded
      (`gudrun` finds Guðrún): a substring of the folded `search_text`, through its anchors' index when it
      has a separator ("gudrun yr jonsdottir", "simnet.is") and its trigram index when it has not;
    - the External ID, whole, in any case;
    - a Pass ID: whole, in any case, with or without dashes (through the unique index), or a prefix of 8+ hex
      characters (what the list shows), through the index on its text (such a query is not also searched as a
      name);
    - an email address or phone number in any common spelling, normalised as they are stored;
    - 4 to 9 digits: also the end of a phone number (through the index on the reversed number), merged with
      the Pass ID prefix the same digits may be.
    """
    query = query.strip()
    condition = Q(external_id__iexact=query)
    if "@" in query:
        try:
            email = normalise_email(query)
        except InvalidIdentity:
            pass  # a part of an address ("thora@", "@simnet.is"): a substring search below
        else:
            # A whole address: its exact forms only. A substring search of a long string reads many trigram
            # posting lists (~100 ms at a million members) to find what the email index finds in one.
            return condition | Q(email=email) | Q(external_id=email)
    whole = _whole_pass_id(query)
    if whole is not None:
        return condition | Q(pass_id=whole)
    prefix = _pass_id_prefix(query)
    if prefix:
        condition |= Q(pass_id_text__startswith=prefix)
    if query.isdigit() and PHONE_ENDING_DIGITS[0] <= len(query) <= PHONE_ENDING_DIGITS[1]:
        condition |= Q(phone_reversed__startswith=query[::-1])
    if _PHONE_LIKE.fullmatch(query) and sum(ch.isdigit() for ch in query) >= 5:
        try:
            phone = normalise_phone(query, region=settings.PHONE_DEFAULT_REGION)
        except InvalidIdentity:
            pass
        else:
            return condition | Q(phone=phone) | Q(external_id=phone)
    key = search_key(query)
    if not key or prefix:
        return condition  # 8+ hex characters are a Pass ID (or an External ID), not a name
    return _text_condition(key, condition)


def _whole_pass_id(query: str) -> uuid.UUID | None:
    """The Pass ID a query is in full (32 hex digits, any case, dashed as a UUID or not at all), or None."""
    digits = query.replace("-", "")
    if len(digits) != 32 or not _PASS_ID_PREFIX.fullmatch(query):
        return None
    try:
        return uuid.UUID(digits)
    except ValueError:
        return None


def _text_condition(key: str, condition: Q) -> Q:
    """`condition`, or `key` inside the folded search text.

    On PostgreSQL, a key with anchors (members.search_text: one with a separator, "gudrun yr jonsdottir",
    "simnet.is") is looked up by them through their GIN index, then checked in the text; one without (a single
    word) through the trigram index. Written as (anchors or condition) and (text or condition), which is the
    same as (anchors and text) or condition, because then the index scans answer the first half exactly and
    the rows they find are checked with the cheap second half only: as "(anchors and text) or condition"
    PostgreSQL would compute every found row's anchors again (~25 µs each: 1,000 members of a domain cost
    25 ms)."""
    tsquery = anchors_tsquery(key) if connection.vendor == "postgresql" else ""
    if not tsquery:  # one word (or SQLite, which scans the text: the embedded mode holds few members)
        return condition | Q(search_text__contains=key)
    in_text = GreaterThan(StrIndex("search_text", Value(key)), 0)  # strpos: no trigram scan for this half
    return (Q(_AnchorsMatch(tsquery)) | condition) & (Q(in_text) | condition)


class _AnchorsMatch(Func):
    """`member_search_anchors(search_text) @@ '…'::tsquery`: the expression of the GIN index of migration 0007."""

    output_field = BooleanField()

    def __init__(self, tsquery: str):
        super().__init__(F("search_text"), Value(tsquery))

    def as_sql(self, compiler, connection, **extra_context):
        text, query = self.get_source_expressions()
        text_sql, text_params = compiler.compile(text)
        query_sql, query_params = compiler.compile(query)
        return f"member_search_anchors({text_sql}) @@ ({query_sql})::tsquery", (*text_params, *query_params)


def _pass_id_prefix(query: str) -> str:
    """The canonical (lowercase, dashed) start of a Pass ID that `query` is, or ''."""
    if not _PASS_ID_PREFIX.fullmatch(query):
        return ""
    digits = query.replace("-", "").lower()
    if len(digits) < PASS_ID_PREFIX_MIN or len(digits) > 32:
        return ""
    if connection.vendor != "postgresql":
        return digits  # SQLite stores a UUID as its 32 hex digits, without dashes
    # Dashes after the 8th, 12th, 16th and 20th hex digit, as uuid::text writes them.
    parts = [digits[start:end] for start, end in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))]
    return "-".join(part for part in parts if part)


def member_list(*, filters: MemberFilters = MemberFilters()) -> QuerySet[Member]:
    """The staff member list, filtered and sorted; paginate it with `member_page`."""
    members = Member.objects.select_related("template")
    if filters.q:
        members = members.alias(pass_id_text=Cast("pass_id", TextField()), phone_reversed=Reverse("phone")).filter(
            member_search_condition(filters.q)
        )
    if filters.template:
        try:
            members = members.filter(template_id=uuid.UUID(filters.template))
        except ValueError:
            members = members.none()
    if filters.status in Member.Status.values:
        members = members.filter(status=filters.status)
    if filters.source in Member.Source.values:
        members = members.filter(source=filters.source)
    if filters.batch:
        members = members.filter(source_batch_id=int(filters.batch)) if filters.batch.isdigit() else members.none()
    if start := _parse_date(filters.created_from):
        members = members.filter(created_at__gte=_start_of_day(start))
    if end := _parse_date(filters.created_to):
        members = members.filter(created_at__lt=_start_of_day(end + timedelta(days=1)))
    if filters.older_than.isdigit():
        members = members.filter(created_at__lt=timezone.now() - timedelta(minutes=int(filters.older_than)))
    if filters.has_external_id == "yes":
        members = members.filter(external_id__isnull=False)
    elif filters.has_external_id == "no":
        members = members.filter(external_id__isnull=True)
    return members.order_by(*SORTS.get(filters.sort, SORTS["-created"]))


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class MemberPage:
    """One page of members without a COUNT(*): it reads one row more than it shows to know if there is a
    next page. At a million rows the count, not the page, is what makes a list slow.

    Quacks like a Django Page for "portal/_pagination.html" (num_pages is unknown, so it is not shown).
    """

    class _UnknownPaginator:
        num_pages = None

    paginator = _UnknownPaginator()

    def __init__(self, members: QuerySet[Member], number: int, per_page: int = MEMBER_PAGE_SIZE):
        self.number = number
        self.per_page = per_page
        offset = (number - 1) * per_page
        rows = list(members[offset : offset + per_page + 1])
        self.object_list = rows[:per_page]
        self._has_next = len(rows) > per_page

    def __iter__(self) -> Iterator[Member]:
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)

    def has_next(self) -> bool:
        return self._has_next

    def has_previous(self) -> bool:
        return self.number > 1

    def has_other_pages(self) -> bool:
        return self.has_next() or self.has_previous()

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1

    def start_index(self) -> int:
        return (self.number - 1) * self.per_page + 1 if self.object_list else 0

    def end_index(self) -> int:
        return (self.number - 1) * self.per_page + len(self.object_list)


def member_page(*, members: QuerySet[Member], page: str | int | None, per_page: int = MEMBER_PAGE_SIZE) -> MemberPage:
    try:
        number = max(1, min(int(page or 1), 1_000_000))
    except (TypeError, ValueError):
        number = 1
    return MemberPage(members, number, per_page)


def member_detail(*, member_id: int) -> Member:
    return Member.objects.select_related("template", "created_by").get(pk=member_id)


def member_status_history(*, member: Member) -> QuerySet[MemberStatusChange]:
    return member.status_changes.select_related("by")


def member_messages(*, member: Member, limit: int = 50):
    """The messages the outbox sent (or tried to send) this member's holder, newest first: the pass links sent
    to the member, and the link of the batch row the member was claimed from."""
    from delivery import selectors as delivery_selectors

    from .services.pass_links import batch_row_subject_key, member_subject_prefix

    messages = delivery_selectors.messages(key_prefix=member_subject_prefix(member.pk))
    if member.source_batch_id is not None and member.source_row is not None:
        row_key = batch_row_subject_key(member.source_batch_id, member.source_row)
        messages = messages | delivery_selectors.messages(subject_key=row_key)
    return messages[:limit]


def member_changes(*, member: Member) -> QuerySet[MemberChange]:
    return member.changes.select_related("by")


def member_values_by_label(*, member: Member) -> list[tuple[str, str, str]]:
    """(label, identifier, value) for every template field, then any value the template no longer has."""
    rows = []
    values = dict(member.values or {})
    for spec in template_field_specs(template=member.template):
        rows.append((spec.name, spec.identifier, str(values.pop(spec.identifier, "") or "")))
    rows.extend((identifier, identifier, str(value)) for identifier, value in values.items())
    return rows


# --- counts for the dashboard and template pages --------------------------------------------------------
# Read from the counts kept as members change (MemberStatusCount, by triggers; TemplateMemberCount, by
# member_issue), a few rows per template: counting a million members took 0.1-0.3 s a query (bench/charts.py).
def member_total() -> tuple[int, bool]:
    """(number of members, whether the number is exact): the kept counts are exact."""
    return sum(member_counts_by_status().values()), True


def member_status_counts(*, template: PassTemplate | None = None) -> dict[str, int]:
    """Members waiting and failed, for the whole mirror or one template."""
    counts = member_counts_by_status(template=template)
    return {status: counts.get(status, 0) for status in (Member.Status.PENDING, Member.Status.FAILED)}


def template_member_count(*, template: PassTemplate) -> int:
    """The count kept per template (members.services.counts), not a COUNT(*) over its members."""
    return TemplateMemberCount.objects.filter(template=template).values_list("members", flat=True).first() or 0


def member_counts_by_status(*, template: PassTemplate | None = None) -> dict[str, int]:
    """Members in each status, across templates or of one, from the counts the triggers keep
    (MemberStatusCount): a few rows per template instead of grouping every member (0.34 s at a million)."""
    kept = MemberStatusCount.objects.order_by()
    if template is not None:
        kept = kept.filter(template=template)
    kept = kept.values_list("status").annotate(n=Sum("members"))
    return {status: int(n) for status, n in kept}


def members_created_since(*, since: datetime, statuses: Iterable[str]) -> dict[str, int]:
    """Members in `statuses` created at or after `since`, by status: a short range of the status index."""
    recent = Member.objects.filter(status__in=list(statuses), created_at__gte=since).order_by()
    return dict(recent.values_list("status").annotate(n=Count("*")))
