import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from members import selectors, services
from members.models import AutofillSource
from members.services import autofill
from templates_sync.models import PassTemplate


class Command(BaseCommand):
    help = (
        'Show a template\'s "Auto fill External ID" setting, or set it with --source. The change is audited '
        "like one made on the settings page. Existing members' External IDs are not touched (use the page's "
        "backfill)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--template", required=True, metavar="UUID")
        parser.add_argument("--source", choices=AutofillSource.values, help="off, email or phone")
        parser.add_argument(
            "--field",
            default="",
            metavar="IDENTIFIER",
            help="the input field to read, when the template has several of that format",
        )
        parser.add_argument("--message", default=None, help="message for a holder who is already enrolled")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        try:
            template = PassTemplate.objects.get(pk=uuid.UUID(options["template"]))
        except (ValueError, PassTemplate.DoesNotExist):
            raise CommandError(
                f"No template {options['template']!r} in the mirror (run sync_templates first?)."
            ) from None
        setting = selectors.autofill_setting_for(template=template)
        changed = False
        if options["source"] is not None:
            before = setting.pk, setting.source, setting.field_identifier, setting.already_enrolled_message
            message = setting.already_enrolled_message if options["message"] is None else options["message"]
            try:
                setting = autofill.autofill_setting_change(
                    template=template,
                    source=options["source"],
                    field_identifier=options["field"],
                    already_enrolled_message=message,
                    via="command",
                )
            except services.AutofillSettingError as exc:
                raise CommandError(str(exc)) from None
            after = setting.pk, setting.source, setting.field_identifier, setting.already_enrolled_message
            changed = before[1:] != after[1:]
        preview = selectors.autofill_preview(template=template)
        outcome = {
            "template": str(template.pk),
            "source": setting.source,
            "field_identifier": selectors.autofill_field_identifier(setting=setting) or "",
            "already_enrolled_message": setting.already_enrolled_message,
            "changed": changed,
            "members_without_external_id": preview.eligible,
            "would_fill": preview.would_fill,
            "conflicts": preview.conflicting_members,
        }
        if options["json"]:
            self.stdout.write(json.dumps(outcome, ensure_ascii=False))
        else:
            field = f" (field {outcome['field_identifier']})" if outcome["field_identifier"] else ""
            self.stdout.write(
                f"{template}: autofill {setting.get_source_display().lower()}{field}{' — changed' if changed else ''}"
            )
            if setting.is_on:
                self.stdout.write(
                    f"{preview.eligible} members without External ID: {preview.would_fill} could be "
                    f"filled, {preview.conflicting_members} in conflict."
                )
