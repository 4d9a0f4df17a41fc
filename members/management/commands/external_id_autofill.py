import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from members import selectors, services
from members.models import AutofillSource
from members.services import autofill
from templates_sync.models import PassTemplate


class Command(BaseCommand):
    help = (
        'Show a template\'s "Auto fill External ID" setting, or set it with --source and/or the "already '
        'enrolled" message (--message-is, --message-en; --message sets both). A holder sees the message in '
        "their page's language, else the other. The change is audited like one made on the settings page. "
        "Existing members' External IDs are not touched (use the page's backfill)."
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
        parser.add_argument(
            "--message", default=None, help="message for a holder who is already enrolled, in both languages"
        )
        parser.add_argument("--message-is", default=None, help="that message in Icelandic (overrides --message)")
        parser.add_argument("--message-en", default=None, help="that message in English (overrides --message)")
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
        both = options["message"]
        message_en = options["message_en"] if options["message_en"] is not None else both
        message_is = options["message_is"] if options["message_is"] is not None else both
        if options["source"] is not None or message_en is not None or message_is is not None:
            before = self._state(setting)
            try:
                setting = autofill.autofill_setting_change(
                    template=template,
                    source=setting.source if options["source"] is None else options["source"],
                    field_identifier=(setting.field_identifier if options["source"] is None else options["field"]),
                    already_enrolled_message=setting.already_enrolled_message if message_en is None else message_en,
                    already_enrolled_message_is=message_is,
                    via="command",
                )
            except services.AutofillSettingError as exc:
                raise CommandError(str(exc)) from None
            changed = before != self._state(setting)
        preview = selectors.autofill_preview(template=template)
        outcome = {
            "template": str(template.pk),
            "source": setting.source,
            "field_identifier": selectors.autofill_field_identifier(setting=setting) or "",
            "already_enrolled_message": setting.already_enrolled_message,
            "already_enrolled_message_is": setting.already_enrolled_message_is,
            "already_enrolled_message_en": setting.already_enrolled_message,
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

    @staticmethod
    def _state(setting) -> tuple:
        return (
            setting.source,
            setting.field_identifier,
            setting.already_enrolled_message,
            setting.already_enrolled_message_is,
        )
