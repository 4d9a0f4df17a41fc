import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from members.models import MemberRefreshRun
from members.services import refresh


class Command(BaseCommand):
    help = (
        "Read every issued member's pass from SmartPages now, stalest first, and record what changed there "
        "(voided, redeemed, values edited) — the refresh job's service, run in this process at most "
        "MEMBER_REFRESH_RATE requests per second (shared with the workers). Skipped (and recorded as skipped) "
        "while another refresh run is running. Exits non-zero when the run failed or was skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--template", metavar="UUID", help="only the members of this template")
        parser.add_argument(
            "--json", action="store_true", help='print {"status", "checked", "changed", "errors"} as one JSON object'
        )

    def handle(self, *args, **options):
        template_id = options["template"]
        if template_id:
            try:
                template_id = uuid.UUID(template_id)
            except ValueError:
                raise CommandError(f"--template needs a template UUID, not {template_id!r}.") from None
        run = refresh.member_refresh_run_start(
            trigger=MemberRefreshRun.Trigger.COMMAND, template_id=template_id, inline=True
        )
        outcome = {"status": run.status, "checked": run.checked, "changed": run.changed, "errors": run.errors}
        if options["json"]:
            self.stdout.write(json.dumps(outcome | {"error": run.error} if run.error else outcome))
        else:
            self.stdout.write(f"{run.status}: {run.checked} checked, {run.changed} changed, {run.errors} errors")
        if run.status in (MemberRefreshRun.Status.FAILED, MemberRefreshRun.Status.SKIPPED):
            raise CommandError(run.error or f"The refresh run {run.status}.")
