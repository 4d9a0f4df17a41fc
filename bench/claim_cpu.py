"""Benchmark: the CPU of each of a claim's three requests, in one process, on production settings.

The portal's own work per request with nothing else on the clock: Django's test client (no gunicorn, no
network to the portal) runs the claim as a holder's phone does — open the link, press the button (the SmartPages
sandbox, a process of its own, creates the pass), open the pass page — and `time.process_time()` is read around
each request. Prints the median CPU per request over --claims claims (after a warm-up), the queries each
request makes, and with --profile the functions that cost the most (cProfile on CPU time).

    .venv/bin/python bench/claim_cpu.py [--claims 200] [--one-link] [--show-queries] [--profile [--sort tottime] [--rows 40] [--dump F]]

--one-link claims one autofill link over and over (claimed once before the measured claims): the path of the
issue's 500 holders on one link, each finding the pass the first one got.

bench/claims.py --surge measures the same claims under load through gunicorn; this says where each request's
CPU goes. PostgreSQL on 127.0.0.1:5432 (BENCH_PG); a throw-away database, `smartpass_bench_claim_cpu`.
"""

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claims as bench  # noqa: E402  bench/claims.py: its sandbox process, link tokens and form patterns

WARM_UP = 30  # claims before the measured ones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also profile the claims (cProfile, CPU time)")
    parser.add_argument("--show-queries", action="store_true", help="also print the SQL of one claim's requests")
    parser.add_argument(
        "--one-link",
        action="store_true",
        help="every claim of one autofill link, claimed once before: the path of many holders on one link",
    )
    parser.add_argument("--sort", default="cumulative", help="the profile's order: cumulative (default) or tottime")
    parser.add_argument("--rows", type=int, default=40, help="the profile's rows to print")
    parser.add_argument("--dump", help="also write the profile to this file (for pstats)")
    args = parser.parse_args()
    sandbox = bench.SandboxProcess()
    os.environ.update(
        bench.production_portal_env(sandbox)
        | {
            "ALLOWED_HOSTS": "testserver",
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5"),
        }
    )
    try:
        bench.setup_django("smartpass_bench_claim_cpu")
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from members.services import autofill
        from templates_sync import sync
        from templates_sync.models import PassTemplate

        assert sync.templates_sync_all().status == "succeeded"
        autofill.autofill_setting_change(
            template=PassTemplate.objects.get(pk=sandbox.autofill_template_id), source="email"
        )
        # As the TLS proxy forwards a holder's request.
        client = Client(HTTP_X_FORWARDED_PROTO="https", enforce_csrf_checks=True)
        run = uuid.uuid4().hex[:6]

        def claim(number: int) -> list[tuple[float, int]]:
            """One claim: (CPU seconds, queries) of each of its three requests."""
            if args.one_link:  # the same holder every time: after the first claim, the pass she has
                fields = {"name": "Percy PassKit", "email": f"percy-{run}@example.is"}
                path = bench.link_url("", sandbox.autofill_template_id, fields)
            else:
                fields = {"name": f"Félagi {number}", "email": f"felagi{number}-{run}@example.is"}
                path = bench.link_url("", sandbox.plain_template_id, fields)
            measured = []

            def timed(request):
                with CaptureQueriesContext(connection) as queries:
                    started = time.process_time()
                    response = request()
                    measured.append((time.process_time() - started, len(queries)))
                if args.show_queries and number == WARM_UP - 1:  # the last warm-up claim: caches filled
                    print(f"--- {len(queries)} queries")
                    for query in queries:
                        print("   ", query["sql"][:300])
                return response

            page = timed(lambda: client.get(path, secure=True))
            text = page.content.decode()
            form = {"nonce": bench.NONCE_RE.search(text)[1], "csrfmiddlewaretoken": bench.CSRF_RE.search(text)[1]}
            answer = timed(lambda: client.post(path, form, secure=True, HTTP_ORIGIN="https://testserver"))
            assert answer.status_code == 302, answer.status_code
            assert timed(lambda: client.get(answer["Location"], secure=True)).status_code == 200
            return measured

        for number in range(WARM_UP):  # warm-up: templates, connections, caches
            claim(number)
        figures = [claim(1000 + number) for number in range(args.claims)]
        total = 0.0
        press = "press (POST, the pass she has)" if args.one_link else "press (POST, the create included)"
        for position, what in enumerate(("claim page (GET)", press, "pass page (GET)")):
            cpu = statistics.median(claim_figures[position][0] for claim_figures in figures)
            queries = statistics.median(claim_figures[position][1] for claim_figures in figures)
            total += cpu
            print(f"{what:36s} {cpu * 1000:6.2f} ms CPU (median of {args.claims}), {queries:.0f} queries")
        print(f"{'a claim':36s} {total * 1000:6.2f} ms CPU; load average {os.getloadavg()[0]:.2f} (1 min)")
        if args.profile:
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for number in range(args.claims):
                claim(100_000 + number)
            profile.disable()
            if args.dump:
                profile.dump_stats(args.dump)
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.rows)
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
