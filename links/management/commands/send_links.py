import json

from django.core.management.base import BaseCommand, CommandError

from links.messages import LANGUAGES
from links.models import LinkBatch
from links.services import sending


class Command(BaseCommand):
    help = (
        "Send a finished batch's links to its holders, as the batch's Send links page does: each row gets one "
        "message, by the first of the channels it has an address for, in its language, with the default "
        "messages. Sending again queues only the rows not queued before."
    )

    def add_arguments(self, parser):
        parser.add_argument("batch", type=int, metavar="BATCH", help="the batch's number (its page's address)")
        parser.add_argument(
            "--channel",
            required=True,
            choices=sorted(sending.CHANNEL_CHOICES),
            help="email, sms, or both in the order tried (email,sms: SMS to rows without an email address)",
        )
        parser.add_argument(
            "--language",
            choices=sorted(LANGUAGES),
            default="is",
            help="the language of rows without a language column value (default: %(default)s)",
        )
        parser.add_argument(
            "--max-segments",
            type=int,
            default=sending.DEFAULT_MAX_SEGMENTS,
            metavar="N",
            help="refuse an SMS longer than N segments (default: %(default)s)",
        )
        parser.add_argument("--json", action="store_true", help='print {"queued", "skipped", "batch"} as JSON')

    def handle(self, *args, **options):
        batch = LinkBatch.objects.select_related("template").filter(pk=options["batch"]).first()
        if batch is None:
            raise CommandError(f"No link batch #{options['batch']}.")
        send_options = sending.SendOptions(
            channels=sending.CHANNEL_CHOICES[options["channel"]],
            columns=sending.send_columns_guess(batch=batch),
            default_language=options["language"],
            max_segments=options["max_segments"],
        )
        try:
            result = sending.batch_send(batch=batch, options=send_options)
        except sending.SendError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result.as_json()))
            return
        self.stdout.write(
            f"Batch #{batch.pk}: {result.queued} messages queued, {result.skipped} rows not sent, "
            f"{result.already} sent or queued before."
        )
        for entry in result.summary:
            self.stdout.write(f"  {entry['count']} × {entry['reason']} (rows {', '.join(map(str, entry['rows']))}…)")
