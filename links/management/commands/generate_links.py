import json
import os
import sys
import uuid
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from links import selectors, services
from links.csv_files import ENCODINGS
from links.models import EXTERNAL_ID_TARGET, LinkBatch
from templates_sync.models import PassTemplate


class Command(BaseCommand):
    help = (
        "Make one SmartPass link per row of a campaign CSV, exactly as the upload page does (the batch shows "
        "in the upload history), and write the result CSV: every input row with smartpass_link and error "
        "(--format passkit: smartUrl). PassKit's columns go to their SmartPages homes (expiry and valid-from "
        "dates, name parts, External ID, meta.KEY back fields); the columns that reach no pass are listed "
        "(unused_columns in --json). A file with more columns than LINKS_MAX_COLUMNS (or rows than "
        "LINKS_MAX_ROWS) is refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("--template", required=True, metavar="UUID", help="the pass template the links issue")
        parser.add_argument("input", metavar="IN.csv")
        parser.add_argument("output", metavar="OUT.csv")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COL=IDENT",
            help=f"put column COL into input field IDENT ({EXTERNAL_ID_TARGET} or members.member.externalId for the External ID; "
            "@external_id_person: the External ID where the program's column is empty; @expirationDate, @validFrom: "
            "the pass's dates; @back: a back field labelled with the column's name; @forename:FIELD, "
            "@othernames:FIELD, @surname:FIELD: parts of a name field; empty to leave the column out); columns not "
            "named keep their automatic match",
        )
        parser.add_argument("--delimiter", choices=[",", ";", "tab"], help="override the detected delimiter")
        parser.add_argument(
            "--encoding",
            choices=list(ENCODINGS),
            help="read the file in this encoding instead of detecting it (detection knows UTF-8 with or without "
            "BOM and UTF-16 by their marks, else picks whichever of cp1252, mac_roman, mac_iceland and cp850 "
            "reads as Icelandic text)",
        )
        parser.add_argument(
            "--format",
            choices=[choice.value for choice in LinkBatch.OutputFormat],
            default=LinkBatch.OutputFormat.PORTAL.value,
            help="portal (default): smartpass_link and error columns, UTF-8 with BOM, CRLF; passkit: PassKit's "
            "smartUrl column, an error column only when some row has one, LF, no BOM",
        )
        parser.add_argument(
            "--single-use",
            action="store_true",
            help="one pass per row: the first claim of a row's link issues, every later claim shows that pass",
        )
        parser.add_argument(
            "--short-links",
            action="store_true",
            help="links of the form {PUBLIC_BASE_URL}/s/{code} (about 40 characters), opening exactly what the "
            "long links open",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="no link for a row with an invalid optional value (by default the row gets its link without "
            "that value, and a warning naming the field and the value)",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=os.cpu_count() or 1,
            metavar="N",
            help="make the batch's chunks in N local processes (default: the number of CPUs, %(default)s here); "
            "1 makes them in this process. The output is the same whatever N is.",
        )
        parser.add_argument(
            "--json", action="store_true", help='print {"rows", "links", "errors", "warnings", ...} as JSON'
        )

    def handle(self, *args, **options):
        if options["jobs"] < 1:
            raise CommandError("--jobs must be 1 or more.")
        template = self._template(options["template"])
        source = Path(options["input"])
        if not source.is_file():
            raise CommandError(f"{source} is not a file.")
        delimiter = "\t" if options["delimiter"] == "tab" else options["delimiter"]
        try:
            with source.open("rb") as binary:
                batch = services.link_batch_create(
                    template=template,
                    uploaded_by=None,
                    file=File(binary, name=source.name),
                    delimiter=delimiter,
                    via=LinkBatch.Via.COMMAND,
                    single_use=options["single_use"],
                    short_links=options["short_links"],
                    encoding=options["encoding"],
                    output_format=options["format"],
                )
            mapping = dict(batch.mapping)
            mapping.update(self._overrides(options["map"], batch.header))
            batch = services.link_batch_confirm(batch=batch, mapping=mapping, strict=options["strict"], enqueue=False)
        except services.LinkUploadError as exc:
            raise CommandError(str(exc)) from None

        show_bar = sys.stderr.isatty() and not options["json"]
        batch = services.link_batch_process(
            batch_id=batch.pk, jobs=options["jobs"], on_progress=self._bar if show_bar else None
        )
        if show_bar:
            sys.stderr.write("\n")
        if batch.status != LinkBatch.Status.SUCCEEDED:
            raise CommandError(batch.error or "Making the links failed.")
        services.link_batch_write_output(batch=batch, path=options["output"])

        outcome = {
            "rows": batch.rows_done,
            "links": batch.links,
            "errors": batch.errors,
            "warnings": batch.warnings,
            "duplicates": batch.duplicates,
            "existing_members": batch.existing_members,
            "unused_columns": [
                column for column, _ in selectors.link_unused_columns(header=batch.header, mapping=batch.mapping)
            ],
            "encoding": batch.source_encoding or batch.encoding,
            "batch": batch.pk,
        }
        if options["json"]:
            self.stdout.write(json.dumps(outcome))
        else:
            self.stdout.write(
                f"{batch.rows_done} rows: {batch.links} links ({batch.warnings} with warnings), {batch.errors} errors, "
                f"{batch.duplicates} duplicates, {batch.existing_members} already members. "
                f"Written to {options['output']} (batch #{batch.pk})."
            )
            for column, why in selectors.link_unused_columns(header=batch.header, mapping=batch.mapping):
                self.stdout.write(f"Not in the pass: {column} — {why}")

    def _template(self, value: str) -> PassTemplate:
        try:
            return PassTemplate.objects.get(pk=uuid.UUID(value))
        except (ValueError, PassTemplate.DoesNotExist):
            raise CommandError(
                f"No pass template {value!r} in the mirror; run `manage.py sync_templates` first."
            ) from None

    def _overrides(self, pairs: list[str], header: list[str]) -> dict[str, str]:
        overrides = {}
        for pair in pairs:
            column, equals, target = pair.partition("=")
            if not equals:
                raise CommandError(f"--map {pair!r}: write it as COL=IDENT.")
            column = column.strip()
            match = next((name for name in header if name.casefold() == column.casefold()), None)
            if match is None:
                raise CommandError(f"--map {pair!r}: the file has no column {column!r} (it has {', '.join(header)}).")
            target = target.strip()
            # PassKit's name for the External ID column works too (no input field is called that).
            overrides[match] = EXTERNAL_ID_TARGET if target == "members.member.externalId" else target
        return overrides

    def _bar(self, done: int, total: int) -> None:
        width = 40
        filled = width * done // total if total else width
        percent = 100 * done // total if total else 100
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}%  {done:,}/{total:,} rows")
        sys.stderr.flush()
