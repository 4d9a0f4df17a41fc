import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from templates_sync import sync
from templates_sync.models import SyncRun


class Command(BaseCommand):
    help = (
        "Mirror the issuer's SmartPages pass templates now: a full sync over every page, or a refresh of one "
        "template with --template. Exits non-zero when the run failed. A full sync is skipped (and recorded "
        "as skipped) while another one runs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--template", metavar="UUID", help="refresh only this template (404 upstream marks it removed)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object with the run's outcome")

    def handle(self, *args, **options):
        template = options["template"]
        if template:
            try:
                template = str(uuid.UUID(template))
            except ValueError:
                raise CommandError(f"--template needs a template UUID, not {template!r}.") from None
            run = sync.template_refresh(template_id=template, trigger=SyncRun.Trigger.COMMAND)
        else:
            run = sync.templates_sync_all(trigger=SyncRun.Trigger.COMMAND)
        outcome = {
            "status": run.status,
            "created": run.created_count,
            "updated": run.updated_count,
            "unchanged": run.unchanged,
            "removed": run.removed,
            "pages": run.pages,
        }
        if options["json"]:
            self.stdout.write(json.dumps(outcome | {"error": run.error, "warning": run.warning}))
        else:
            self.stdout.write(
                f"{run.status}: {run.created_count} created, {run.updated_count} updated, {run.unchanged} unchanged, "
                f"{run.removed} removed, {run.pages} pages"
            )
            if run.warning:
                self.stdout.write(run.warning)
        if run.status == SyncRun.Status.FAILED:
            raise CommandError(run.error or "The sync failed.")
