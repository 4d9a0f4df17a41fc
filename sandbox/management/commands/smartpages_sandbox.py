"""``manage.py smartpages_sandbox``: run the local SmartPages stand-in in the foreground."""

import os

from django.core.management.base import BaseCommand, CommandError

from sandbox import DEMO_TEMPLATE_ID, Faults, SmartPagesSandbox

DEFAULT_KEY_ID = "sandbox"
DEFAULT_KEY_TOKEN = "sandbox-secret"


class Command(BaseCommand):
    help = (
        "Run the local SmartPages sandbox: a stand-in for the SmartPages REST API (pass templates and passes) "
        "with generated Icelandic data and optional faults. It is not the real service; point "
        "SMARTPAGES_API_URL at the URL it prints."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8001, help="Port to listen on (default 8001; 0 = any free).")
        parser.add_argument(
            "--templates",
            type=int,
            default=25,
            help="How many pass templates to serve (default 25; the first is the demo club card).",
        )
        parser.add_argument(
            "--seed", type=int, default=1, help="Seed for the generated templates: same seed, same data (default 1)."
        )
        parser.add_argument(
            "--key-id",
            default=os.environ.get("SMARTPAGES_KEY_ID") or DEFAULT_KEY_ID,
            help="KEY_ID the sandbox accepts (default: $SMARTPAGES_KEY_ID, else 'sandbox').",
        )
        parser.add_argument(
            "--key-token",
            default=os.environ.get("SMARTPAGES_KEY_TOKEN") or DEFAULT_KEY_TOKEN,
            help="KEY_TOKEN the sandbox accepts (default: $SMARTPAGES_KEY_TOKEN, else 'sandbox-secret').",
        )
        parser.add_argument(
            "--page-size-cap",
            type=int,
            default=100,
            help="Largest page the template list serves, whatever page_size asks for (default 100).",
        )
        parser.add_argument(
            "--error-rate",
            type=float,
            default=0.0,
            help="Fraction of API requests answered 503, e.g. 0.1 (default 0).",
        )
        parser.add_argument(
            "--rate-limit-rate",
            type=float,
            default=0.0,
            help="Fraction of API requests answered 429 with Retry-After (default 0).",
        )
        parser.add_argument(
            "--retry-after", type=int, default=1, help="Seconds sent in Retry-After with a 429 (default 1)."
        )
        parser.add_argument(
            "--reset-rate",
            type=float,
            default=0.0,
            help="Fraction of API requests whose connection is reset without an answer (default 0).",
        )
        parser.add_argument(
            "--slow",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Sleep this long before every API answer (default 0).",
        )
        parser.add_argument(
            "--drip",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Send every API answer one byte at a time, this many seconds apart (default 0: off).",
        )
        parser.add_argument(
            "--gzip-bomb",
            type=int,
            default=0,
            metavar="BYTES",
            help="Answer every API request with gzip that inflates to this many bytes, e.g. 500000000 (default 0).",
        )
        parser.add_argument(
            "--redirect-to",
            metavar="URL",
            help="Answer every API request with a 302 to this origin plus the asked path (default: off).",
        )
        parser.add_argument(
            "--fault-scope",
            choices=("all", "templates", "passes"),
            default="all",
            help="Which endpoints the faults hit (default all).",
        )
        parser.add_argument(
            "--hostile",
            action="store_true",
            help="Serve hostile template data: the first list page also carries over-long texts, NUL bytes, "
            "numbers out of range, a javascript: URL and items no mirror can store, and totalItems says 10**11.",
        )
        parser.add_argument(
            "--passes-file",
            metavar="PATH",
            help="Keep the passes in this file (one JSON line per pass written), so they survive a restart; "
            "`make run` uses var/sandbox-passes.jsonl. Default: in memory only.",
        )
        parser.add_argument("--verbose", action="store_true", help="Print one line per request.")

    def handle(self, *args, **options):
        try:
            faults = Faults(
                error_rate=options["error_rate"],
                rate_limit_rate=options["rate_limit_rate"],
                retry_after=options["retry_after"],
                reset_rate=options["reset_rate"],
                slow_seconds=options["slow"],
                scope=options["fault_scope"],
                hostile_items=options["hostile"],
                drip_seconds=options["drip"],
                gzip_bomb_bytes=options["gzip_bomb"],
                redirect_to=options["redirect_to"],
            )
            sandbox = SmartPagesSandbox(
                templates=options["templates"],
                seed=options["seed"],
                key_id=options["key_id"],
                key_token=options["key_token"],
                page_size_cap=options["page_size_cap"],
                host=options["host"],
                port=options["port"],
                faults=faults,
                verbose=options["verbose"],
                passes_file=options["passes_file"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        except OSError as error:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {error}") from error

        # A token that came from the environment or the command line may be a real one: never echo it.
        shown_token = options["key_token"] if options["key_token"] == DEFAULT_KEY_TOKEN else "(as given, not shown)"
        self.stdout.write(
            f"SmartPages sandbox (a local stand-in, not the real service) at {sandbox.url}\n"
            f"  templates: {options['templates']} (seed {options['seed']}), demo template {DEMO_TEMPLATE_ID}\n"
            f"  accepts   SMARTPAGES_KEY_ID={options['key_id']}  SMARTPAGES_KEY_TOKEN={shown_token}\n"
            f"  use with  SMARTPAGES_API_URL={sandbox.url}\n"
            f"  faults:   {_describe_faults(faults)}\n"
            f"  passes:   {options['passes_file'] or 'in memory (lost when it stops)'}\n"
            "Quit with CONTROL-C."
        )
        try:
            sandbox.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            sandbox.stop()
        self.stdout.write("SmartPages sandbox stopped.")


def _describe_faults(faults: Faults) -> str:
    active = [
        f"{label} {value}"
        for label, value in (
            ("503 rate", faults.error_rate),
            ("429 rate", faults.rate_limit_rate),
            ("reset rate", faults.reset_rate),
            ("slow seconds", faults.slow_seconds),
            ("drip seconds", faults.drip_seconds),
            ("gzip bomb bytes", faults.gzip_bomb_bytes),
            ("redirect to", faults.redirect_to),
        )
        if value
    ]
    hostile = ["hostile template data"] if faults.hostile_items else []
    if not active:
        return ", ".join(hostile) or "none"
    return ", ".join([*active, *hostile]) + f" (scope {faults.scope})"
