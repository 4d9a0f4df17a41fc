"""The email and phone search copies of members a refresh changed, made again in their normal form.

Until 5 Dec 2026 a refresh stored those copies as SmartPages keeps the values ("Laura@Example.com", "699 1234"),
while every other path stores the normal form. A claim finds its holder through the copies (autofill adoption,
a corrected address), so such a holder's next click could make a second pass. Only members whose values a refresh
changed can hold such copies: theirs are made again as a refresh now makes them (members.services.passes). The
logic is written out here, from pure functions only, so that later changes to the services do not change what this
migration did. Idempotent: batches of their own, so a large table is not held locked in one transaction.
"""

from django.conf import settings
from django.db import migrations, transaction

from members.search_text import member_search_fields
from members.validation import FieldSpec, validate_field

BATCH = 900  # within SQLite's oldest limit of 999 parameters a statement
COPIES = ("display_name", "email", "phone", "search_text")


def _specs(raw) -> list[FieldSpec]:
    """The template's input fields (its API object's `inputFields`), as validation specs."""
    fields = raw.get("inputFields") if isinstance(raw, dict) else None
    return [
        FieldSpec(identifier=str(f["identifier"]), label=str(f.get("label") or ""), format=str(f.get("format") or ""))
        for f in (fields if isinstance(fields, list) else [])
        if isinstance(f, dict) and f.get("identifier") is not None
    ]


def _copies(specs: list[FieldSpec], values: dict) -> dict[str, str]:
    """The search copies of `values`, each valid email and phone number in its normal form."""
    normalised = dict(values)
    for spec in specs:
        value = normalised.get(spec.identifier)
        if value and spec.format.upper() in ("EMAIL", "PHONE_NUMBER"):
            checked = validate_field(spec, str(value), region=settings.PHONE_DEFAULT_REGION, check_mandatory=False)
            if not checked.error:
                normalised[spec.identifier] = checked.value
    return member_search_fields(specs=specs, values=normalised)


def forwards(apps, schema_editor):
    Member = apps.get_model("members", "Member")
    MemberChange = apps.get_model("members", "MemberChange")
    PassTemplate = apps.get_model("templates_sync", "PassTemplate")
    refreshed = sorted(
        MemberChange.objects.filter(via="refresh").order_by().values_list("member_id", flat=True).distinct()
    )
    specs_of = {}
    for start in range(0, len(refreshed), BATCH):
        with transaction.atomic():
            members = Member.objects.filter(pk__in=refreshed[start : start + BATCH]).only("template_id", "values", *COPIES)
            changed = []
            for member in members:
                if member.template_id not in specs_of:
                    raw = PassTemplate.objects.filter(pk=member.template_id).values_list("raw", flat=True).first()
                    specs_of[member.template_id] = _specs(raw)
                copies = _copies(specs_of[member.template_id], member.values or {})
                if any(getattr(member, name) != copies[name] for name in COPIES):
                    for name in COPIES:
                        setattr(member, name, copies[name])
                    changed.append(member)
            Member.objects.bulk_update(changed, COPIES)


class Migration(migrations.Migration):
    atomic = False  # a transaction per batch (forwards)

    dependencies = [("members", "0016_member_status_counts")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
