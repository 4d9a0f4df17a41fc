"""Benchmark: the public claim flow under load, through gunicorn, on PostgreSQL, against a sandbox process.

Three processes: a SmartPages sandbox (a child process, so it can be asked how many passes it was asked to
create), gunicorn serving the portal (a subprocess, `portal.settings_test` on a throw-away database), and
this process, the load: threads with `requests` on 127.0.0.1 doing what a holder's browser does — fetch the
claim page, then POST the form with its CSRF cookie/token and one-time nonce.

Prints:
  - claims per second for new members (GET + POST, autofill off, every link a different holder);
  - p50/p95 of the POST on the existing-pass path (autofill on, the link already claimed);
  - after N simultaneous claims of one fresh autofill link (threads meet at a Barrier between GET and POST):
    members for its External ID and upstream `POST /api/v1/pass` made for it. Goal: 1 and 1.

    .venv/bin/python bench/claims.py [--workers 2] [--threads 4] [--new 400] [--existing 400]
                                     [--concurrency 16] [--race 200]
"""

import argparse
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _db import ROOT, setup_django

# bench/ holds links.py and members.py: with bench/ on sys.path, `import links` would find the benchmark
# instead of the app. Drop it (after importing _db) and work from the repository root.
_BENCH_DIR = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

DATABASE = "smartpass_bench_claims"
KEY_ID, KEY_TOKEN = "sandbox", "sandbox-secret"
NONCE_RE = re.compile(r'name="nonce" value="([^"]+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- the sandbox process --------------------------------------------------------------------------------------
def _sandbox_main(conn) -> None:
    from sandbox import DEMO_TEMPLATE_ID, SmartPagesSandbox

    sandbox = SmartPagesSandbox(templates=3, key_id=KEY_ID, key_token=KEY_TOKEN).start()
    # A second copy of the club card: autofill will be on for it, off for the first.
    autofill_id = sandbox.add_template(
        sandbox.get_template(DEMO_TEMPLATE_ID) | {"id": str(uuid.uuid4()), "name": "Klúbbkort (autofill)"}
    )["id"]
    conn.send((sandbox.url, DEMO_TEMPLATE_ID, autofill_id))
    while True:
        command, argument = conn.recv()
        if command == "posts":
            conn.send(sandbox.request_count("POST", "/api/v1/pass"))
        elif command == "passes_for":
            conn.send(sum(1 for issued in sandbox.passes() if issued["externalIdentifier"] == argument))
        elif command == "stop":
            sandbox.stop()
            conn.send(None)
            return


class SandboxProcess:
    def __init__(self):
        context = multiprocessing.get_context("fork")  # before Django or any thread exists in this process
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_sandbox_main, args=(child,), daemon=True)
        self.process.start()
        self.url, self.plain_template_id, self.autofill_template_id = self.conn.recv()

    def ask(self, command: str, argument=None):
        self.conn.send((command, argument))
        return self.conn.recv()

    def stop(self) -> None:
        self.ask("stop")
        self.process.join(timeout=10)


# --- gunicorn ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(*, workers: int, threads: int, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(ROOT / "var" / "bench-claims-gunicorn.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--backlog",
            "2048",
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited early; see {log.name}")
        try:
            if requests.get(url + "/healthz", timeout=2).status_code in (200, 503):
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit("gunicorn did not start in 60 s")


# --- the load -----------------------------------------------------------------------------------------------------
_local = threading.local()


def _session():
    import requests

    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def open_form(session, url: str) -> dict:
    page = session.get(url, timeout=120)
    if page.status_code != 200:
        raise RuntimeError(f"claim page answered {page.status_code}")
    return {"nonce": NONCE_RE.search(page.text).group(1), "csrfmiddlewaretoken": CSRF_RE.search(page.text).group(1)}


def post_form(session, url: str, form: dict) -> tuple[float, str]:
    started = time.perf_counter()
    answer = session.post(url, data=form, allow_redirects=False, timeout=120)
    elapsed = time.perf_counter() - started
    if answer.status_code != 302:
        raise RuntimeError(f"claim answered {answer.status_code}")
    return elapsed, answer.headers["Location"]


def claim(url: str) -> tuple[float, str]:
    session = _session()
    return post_form(session, url, open_form(session, url))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def link_url(base: str, template_id: str, fields: dict) -> str:
    from links import tokens
    from links.keyring import link_keys

    payload = tokens.LinkPayload(template_id=uuid.UUID(template_id), fields=fields)
    return f"{base}/p/{tokens.encode(payload, link_keys())}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per gunicorn worker")
    parser.add_argument("--new", type=int, default=400, help="claims of distinct links (new members)")
    parser.add_argument("--existing", type=int, default=400, help="claims of one already-claimed autofill link")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads for the first two phases")
    parser.add_argument("--race", type=int, default=200, help="simultaneous claims of one fresh autofill link")
    args = parser.parse_args()

    sandbox = SandboxProcess()
    os.environ.update(
        {
            "SMARTPAGES_API_URL": sandbox.url,
            "SMARTPAGES_KEY_ID": KEY_ID,
            "SMARTPAGES_KEY_TOKEN": KEY_TOKEN,
            "CLAIM_RATE": "1000000/m",
        }
    )
    os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/5")
    setup_django(DATABASE)
    from members.models import Member
    from members.services import autofill
    from templates_sync import sync
    from templates_sync.models import PassTemplate

    assert sync.templates_sync_all().status == "succeeded"
    autofill.autofill_setting_change(template=PassTemplate.objects.get(pk=sandbox.autofill_template_id), source="email")
    (ROOT / "var").mkdir(exist_ok=True)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="portal.settings_test", PYTHONUNBUFFERED="1")
    gunicorn, base = start_gunicorn(workers=args.workers, threads=args.threads, env=env)
    try:
        print(
            f"gunicorn {args.workers} workers x {args.threads} threads at {base}; sandbox at {sandbox.url}; "
            f"PostgreSQL database {DATABASE}",
            flush=True,
        )
        warm = link_url(base, sandbox.plain_template_id, {"name": "Warm Up", "email": "warm@example.is"})
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda _: _session().get(warm, timeout=60), range(args.concurrency * 2)))

        # 1. New members: every claim a different holder, autofill off.
        links = [
            link_url(base, sandbox.plain_template_id, {"name": f"Félagi {n}", "email": f"felagi{n}@example.is"})
            for n in range(args.new)
        ]
        members_before, posts_before = Member.objects.count(), sandbox.ask("posts")
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            new_results = list(pool.map(claim, links))
        wall = time.perf_counter() - started
        made = Member.objects.count() - members_before
        assert made == args.new and len({location for _, location in new_results}) == args.new, made
        assert sandbox.ask("posts") - posts_before == args.new
        new_posts = [seconds for seconds, _ in new_results]
        print(
            f"new members: {args.new} claims (GET form + POST) in {wall:.2f} s at concurrency {args.concurrency} "
            f"= {args.new / wall:.1f} claims/s; POST p50 {percentile(new_posts, 0.5) * 1000:.1f} ms, "
            f"p95 {percentile(new_posts, 0.95) * 1000:.1f} ms",
            flush=True,
        )

        alone_links = [
            link_url(base, sandbox.plain_template_id, {"name": f"Gestur {n}", "email": f"gestur{n}@example.is"})
            for n in range(min(args.new, 200))
        ]
        started = time.perf_counter()
        alone_new = [claim(link)[0] for link in alone_links]
        wall = time.perf_counter() - started
        print(
            f"new members, one at a time: {len(alone_new)} claims = {len(alone_new) / wall:.1f} claims/s; "
            f"POST p50 {percentile(alone_new, 0.5) * 1000:.1f} ms, p95 {percentile(alone_new, 0.95) * 1000:.1f} ms",
            flush=True,
        )

        # 2. The existing-pass path: one autofill link, already claimed once.
        laura = link_url(
            base, sandbox.autofill_template_id, {"name": "Laura Loopy", "email": "Laura.Loopy@Example.COM"}
        )
        _, laura_location = claim(laura)
        posts_before = sandbox.ask("posts")
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            existing_results = list(pool.map(lambda _: claim(laura), range(args.existing)))
        wall = time.perf_counter() - started
        assert {location for _, location in existing_results} == {laura_location}
        assert sandbox.ask("posts") == posts_before
        existing_posts = [seconds for seconds, _ in existing_results]
        print(
            f"existing pass, concurrency {args.concurrency}: {args.existing} claims in {wall:.2f} s = "
            f"{args.existing / wall:.1f} claims/s; POST p50 {percentile(existing_posts, 0.5) * 1000:.1f} ms, "
            f"p95 {percentile(existing_posts, 0.95) * 1000:.1f} ms; 0 upstream calls",
            flush=True,
        )
        # The same path one holder at a time: the latency a person sees when the server is not queueing.
        alone = [claim(laura)[0] for _ in range(min(args.existing, 200))]
        print(
            f"existing pass, one at a time: {len(alone)} claims; POST p50 {percentile(alone, 0.5) * 1000:.1f} ms, "
            f"p95 {percentile(alone, 0.95) * 1000:.1f} ms",
            flush=True,
        )

        # 3. N simultaneous claims of one fresh autofill link.
        email = f"race-{uuid.uuid4().hex[:8]}@example.is"
        race_link = link_url(base, sandbox.autofill_template_id, {"name": "Percy PassKit", "email": email})
        barrier = threading.Barrier(args.race)
        posts_before = sandbox.ask("posts")

        def race_claim(_):
            session = _session()
            # A fresh connection for the POST: waiting at the barrier outlasts gunicorn's keep-alive (2 s), and
            # requests does not retry a POST on a connection the server has closed.
            session.headers["Connection"] = "close"
            form = open_form(session, race_link)
            barrier.wait(timeout=120)
            return post_form(session, race_link, form)

        started = time.perf_counter()
        with ThreadPoolExecutor(args.race) as pool:
            race_results = list(pool.map(race_claim, range(args.race)))
        wall = time.perf_counter() - started
        members_for_link = Member.objects.filter(external_id=email).count()
        upstream_for_link = sandbox.ask("passes_for", email)
        upstream_posts = sandbox.ask("posts") - posts_before
        print(
            f"race: {args.race} simultaneous claims of one autofill link in {wall:.2f} s → "
            f"{len({location for _, location in race_results})} distinct pass page(s), "
            f"members {members_for_link}, upstream passes {upstream_for_link} "
            f"(POST /api/v1/pass calls {upstream_posts}); POST p50 "
            f"{percentile([s for s, _ in race_results], 0.5) * 1000:.0f} ms, "
            f"p95 {percentile([s for s, _ in race_results], 0.95) * 1000:.0f} ms "
            f"(goal 1 and 1: {'met' if members_for_link == upstream_for_link == 1 else 'NOT MET'})",
            flush=True,
        )
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
        sandbox.stop()


if __name__ == "__main__":
    main()
