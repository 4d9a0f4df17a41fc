"""The email and phone search copies of members a refresh changed, made again in their normal form.

Until 5 Dec 2026 a refresh stored those copies as SmartPages keeps the values ("Laura@Example.com", "699 1234"),
while every other path stores the normal form. A claim finds its holder through the copies (autofill adoption,
a corrected address), so such a holder's next click could make a second pass. Only members whose values a refresh
changed can hold such copies: theirs are made again, by the same function a refresh now uses.
"""

from django.db import migrations

BATCH = 1000
COPIES = ("display_name", "email", "phone", "search_text")


def forwards(apps, schema_editor):
    # Functions of plain values: the historical models below are the only models this touches.
    from members.services.passes import pass_values_search_copies
    from members.validation import FieldSpec
    from templates_sync.models import input_fields_of

    Member = apps.get_model("members", "Member")
    MemberChange = apps.get_model("members", "MemberChange")
    refreshed = sorted(set(MemberChange.objects.filter(via="refresh").values_list("member_id", flat=True)))
    specs_of = {}
    for start in range(0, len(refreshed), BATCH):
        changed = []
        for member in Member.objects.filter(pk__in=refreshed[start : start + BATCH]).select_related("template"):
            specs = specs_of.get(member.template_id)
            if specs is None:
                specs = specs_of[member.template_id] = [
                    FieldSpec(
                        identifier=f.identifier, label=f.label, format=f.format, is_mandatory=f.is_mandatory, type=f.type
                    )
                    for f in input_fields_of(member.template.raw)
                ]
            copies = pass_values_search_copies(specs=specs, values=member.values or {})
            if any(getattr(member, name) != copies[name] for name in COPIES):
                for name in COPIES:
                    setattr(member, name, copies[name])
                changed.append(member)
        Member.objects.bulk_update(changed, COPIES)


class Migration(migrations.Migration):
    dependencies = [("members", "0016_member_status_counts")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
