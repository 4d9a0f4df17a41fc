from django.db import migrations

# The limits of the dropped table's columns (identifier, label, format, type).
_LIMITS = {"identifier": 200, "label": 500, "format": 32, "type": 16}


def _text(value, limit=None) -> str:
    return ("" if value is None else str(value))[:limit]


def rows_rebuilt_from_raw(apps, schema_editor):
    """Going back: the table comes back empty, and the old sync would never fill it (every template unchanged),
    so its rows are made again from each template's raw object, as the old sync made them."""
    PassTemplate = apps.get_model("templates_sync", "PassTemplate")
    TemplateInputField = apps.get_model("templates_sync", "TemplateInputField")
    rows = []
    for template in PassTemplate.objects.only("id", "raw").iterator(chunk_size=1000):
        entries = template.raw.get("inputFields") if isinstance(template.raw, dict) else None
        identifiers = set()
        for position, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict) or entry.get("identifier") is None:
                continue
            identifier = _text(entry["identifier"], _LIMITS["identifier"])
            if identifier in identifiers:
                continue
            identifiers.add(identifier)
            rows.append(
                TemplateInputField(
                    template_id=template.id,
                    position=position,
                    identifier=identifier,
                    label=_text(entry.get("label"), _LIMITS["label"]),
                    description=_text(entry.get("description")),
                    is_mandatory=bool(entry.get("isMandatory")),
                    is_unique=bool(entry.get("isUnique")),
                    format=_text(entry.get("format"), _LIMITS["format"]),
                    type=_text(entry.get("type"), _LIMITS["type"]),
                )
            )
    TemplateInputField.objects.bulk_create(rows, batch_size=1000)


class Migration(migrations.Migration):
    """Input fields are read from each template's raw object (PassTemplate.input_fields): the table goes.
    Nothing is lost (raw holds every field); going back rebuilds the table's rows from raw."""

    dependencies = [
        ("templates_sync", "0007_raw_kept_as_json_text"),
    ]

    operations = [
        migrations.RunPython(migrations.RunPython.noop, rows_rebuilt_from_raw),
        migrations.DeleteModel(
            name="TemplateInputField",
        ),
    ]
