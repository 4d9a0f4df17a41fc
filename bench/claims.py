"""Benchmark: the public claim flow under load, through gunicorn, on PostgreSQL, against a sandbox process.

Three processes: a SmartPages sandbox (a child process, so it can be asked how many passes it was asked to
create), gunicorn serving the portal (a subprocess, `portal.settings_test` on a throw-away database), and
this process, the load: threads with `requests` on 127.0.0.1 doing what a holder's browser does — fetch the
claim page, then POST the form with its CSRF cookie/token and one-time nonce.

One script of ~750 lines because bench/README's commands run it as one file; its sections: the sandbox
process, gunicorn, the load, the surge (--surge).

Prints:
  - claims per second for new members (GET + POST, autofill off, every link a different holder);
  - p50/p95 of the POST on the existing-pass path (autofill on, the link already claimed);
  - after N simultaneous claims of one fresh autofill link (threads meet at a Barrier between GET and POST):
    members for its External ID and upstream `POST /api/v1/pass` made for it. Goal: 1 and 1.

    .venv/bin/python bench/claims.py [--workers 2] [--threads 4] [--new 400] [--existing 400]
                                     [--concurrency 16] [--race 200]

With --surge (issue 24), instead: serving configurations side by side, each gunicorn started with the production
config (deploy/gunicorn.conf.py) and production settings, the sandbox answering each pass create after
--upstream-ms: --links distinct links claimed --surge-concurrency at a time (a claim: open the link, press the
button, reach the pass page), in interleaved rounds, by asyncio holders on raw sockets; then --one-link holders
pressing together on one fresh autofill link. Prints claims/s, p50/p95, errors, web CPU per claim, RSS per web
process and the load average; "before" (3 sync workers) is the baseline. bench/README.md "Claim surge".

    .venv/bin/python bench/claims.py --surge [--links 5000] [--before-links 1000] [--rounds 5] [--one-link 500]
                                     [--config "NAME=gunicorn flags"] ...

Longer than ~600 lines: the two modes share the sandbox process, the link tokens and the percentiles, and a
benchmark reads best in one file.
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

DATABASE = os.environ.get("BENCH_CLAIMS_DATABASE", "smartpass_bench_claims")
KEY_ID, KEY_TOKEN = "sandbox", "sandbox-secret"
NONCE_RE = re.compile(r'name="nonce" value="([^"]+)"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# --- the sandbox process --------------------------------------------------------------------------------------
def _sandbox_main(conn) -> None:
    from sandbox import DEMO_TEMPLATE_ID, Faults, SmartPagesSandbox

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
        elif command == "latency":
            # The latency switch: every pass create (and read) answers after `argument` seconds.
            sandbox.faults = Faults(slow_seconds=argument, scope="passes")
            conn.send(None)
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


# --- the surge (--surge) -------------------------------------------------------------------------------------------
# The holders' side is asyncio on raw sockets, not threads with requests: 200 holders at 150 claims/s are ~450
# requests a second, and requests' own CPU (~1 ms a request) on the same 2 CPUs would be measured as the portal's.
class HttpConnection:
    """One holder's HTTP/1.1 connection: keep-alive when the server allows it, reopened when it closed it."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict, bytes]:
        import asyncio

        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection without an answer")
        status = int(status_line.split()[1])
        answer_headers: dict[str, list[str]] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            answer_headers.setdefault(name.strip().lower(), []).append(value.strip())
        if "content-length" in answer_headers:
            content = await self.reader.readexactly(int(answer_headers["content-length"][0]))
        elif answer_headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            content = b"".join(parts)
        else:
            content = await self.reader.read()
            answer_headers["connection"] = ["close"]
        if answer_headers.get("connection", [""])[0].lower() == "close":
            self.close()
        return status, answer_headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class ClaimFailed(Exception):
    pass


async def surge_open_form(conn: HttpConnection, path: str, proxy_headers: dict) -> tuple[dict, str]:
    status, headers, content = await conn.request("GET", path, proxy_headers)
    if status != 200:
        raise ClaimFailed(f"claim page answered {status}")
    text = content.decode()
    cookie = next(c.split(";")[0] for c in headers.get("set-cookie", []) if "csrftoken=" in c.split(";")[0])
    form = {"nonce": NONCE_RE.search(text).group(1), "csrfmiddlewaretoken": CSRF_RE.search(text).group(1)}
    return form, cookie


async def surge_press_and_follow(conn: HttpConnection, path: str, form: dict, cookie: str, proxy_headers: dict) -> str:
    """POST the form and open the pass page it redirects to; returns the pass page's path."""
    from urllib.parse import urlencode

    headers = {**proxy_headers, "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    status, answer, _ = await conn.request("POST", path, headers, urlencode(form).encode())
    if status != 302:
        raise ClaimFailed(f"claim answered {status}")
    location = answer["location"][0]
    status, _, content = await conn.request("GET", location, proxy_headers)
    if status != 200 or b"<html" not in content[:200].lower():
        raise ClaimFailed(f"pass page answered {status}")
    return location


def load_average() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def gunicorn_workers(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_production_gunicorn(extra_args: list[str], env: dict) -> tuple[subprocess.Popen, str, int]:
    """gunicorn as deploy/gunicorn.conf.py configures it (plus `extra_args`, for the baseline and the
    alternatives), on a free port; returns (process, host, port) once every worker answers."""
    import requests

    port = free_port()
    log = open(ROOT / "var" / f"bench-surge-gunicorn-{port}.log", "w")
    command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", *extra_args]
    command += ["--bind", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, cwd=ROOT, env={**env, "PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited early; see {log.name}")
        try:
            headers = {"X-Forwarded-Proto": "https"}
            if requests.get(f"http://127.0.0.1:{port}/healthz", headers=headers, timeout=2).status_code == 200:
                return process, "127.0.0.1", port
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    sys.exit("gunicorn did not start in 60 s")


class Served:
    """One serving configuration, running: gunicorn as deploy/gunicorn.conf.py configures it plus `extra_args`
    (ENV:KEY=VALUE among them sets the web processes' environment instead), and the holders' side for it."""

    def __init__(self, name: str, extra_args: list[str], env: dict):
        env = {**env, **dict(arg[4:].split("=", 1) for arg in extra_args if arg.startswith("ENV:"))}
        flags = [arg for arg in extra_args if not arg.startswith("ENV:")]
        self.name = name
        self.process, self.host, self.port = start_production_gunicorn(flags, env)
        self.workers = gunicorn_workers(self.process.pid)
        self.proxy = {
            "X-Forwarded-Proto": "https",
            "Origin": f"https://{self.host}:{self.port}",
            "X-Real-IP": "127.0.0.1",
        }
        self.latencies, self.errors, self.wall, self.cpu, self.claims = [], [], 0.0, 0.0, 0
        self.loads: list[str] = []
        self.rss_rounds: list[float] = []  # mean RSS of the web processes after each round, MiB

    async def claim(self, path: str) -> str:
        conn = HttpConnection(self.host, self.port)
        try:
            form, cookie = await surge_open_form(conn, path, self.proxy)
            return await surge_press_and_follow(conn, path, form, cookie, self.proxy)
        finally:
            conn.close()

    async def surge(self, paths: list[str], concurrency: int) -> tuple[list[float], list[str]]:
        """`concurrency` holders at a time, each claiming the next link as soon as its last claim ended."""
        import asyncio

        queue = iter(paths)
        latencies, errors = [], []

        async def holder() -> None:
            for path in queue:
                started = time.perf_counter()
                try:
                    await asyncio.wait_for(self.claim(path), 120)
                    latencies.append(time.perf_counter() - started)
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown, none ends the run
                    errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(holder() for _ in range(concurrency)))
        return latencies, errors

    def surge_round(self, paths: list[str], concurrency: int) -> None:
        import asyncio

        self.loads.append(load_average().removeprefix("load average "))
        cpu_before = sum(cpu_seconds(pid) for pid in self.workers)
        started = time.perf_counter()
        latencies, errors = asyncio.run(self.surge(paths, concurrency))
        self.wall += time.perf_counter() - started
        self.cpu += sum(cpu_seconds(pid) for pid in self.workers) - cpu_before
        self.latencies += latencies
        self.errors += errors
        self.claims += len(paths)
        self.rss_rounds.append(sum(self.rss()) / len(self.workers))

    async def one_link_at_once(self, path: str, holders: int) -> tuple[list[float], list[str], set[str]]:
        """Every holder opens the link, then all press the button together (an Event, like a Barrier)."""
        import asyncio

        opened, go = [], asyncio.Event()
        latencies, errors, pages = [], [], set()

        def one_more_opened() -> None:
            opened.append(1)
            if len(opened) == holders:
                go.set()

        async def holder() -> None:
            conn = HttpConnection(self.host, self.port)
            try:
                form, cookie = await asyncio.wait_for(surge_open_form(conn, path, self.proxy), 120)
                conn.close()  # a fresh connection for the press: the wait may outlast keep-alive
                one_more_opened()
                await asyncio.wait_for(go.wait(), 120)
                started = time.perf_counter()
                pages.add(await asyncio.wait_for(surge_press_and_follow(conn, path, form, cookie, self.proxy), 120))
                latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
                if not go.is_set() and len(latencies) + len(errors) <= len(opened):
                    one_more_opened()
            finally:
                conn.close()

        await asyncio.gather(*(holder() for _ in range(holders)))
        return latencies, errors, pages

    def rss(self) -> list[float]:
        return [rss_mib(pid) for pid in self.workers]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


# Serving configurations measured side by side. "before" is the config issue 24 measured: 3 sync workers.
SURGE_CONFIGS = {
    # --threads 1 as well: with the config file's threads > 1, gunicorn silently runs gthread for "sync".
    "before": ["--worker-class", "sync", "--workers", "3", "--threads", "1"],
    "now": [],  # deploy/gunicorn.conf.py as it is
}
# --floor: the same gunicorn config serving claims that do nothing (bench/floor/claims_floor.py).
FLOOR_CONFIGS = {
    "floor-django": ["--pythonpath", "bench/floor", "claims_floor:django_floor"],
    "floor-wsgi": ["--pythonpath", "bench/floor", "claims_floor:wsgi_floor"],
}


def surge_report(served: Served, args) -> dict:
    rate = len(served.latencies) / served.wall if served.wall else 0.0
    p50 = percentile(served.latencies, 0.5) if served.latencies else float("nan")
    p95 = percentile(served.latencies, 0.95) if served.latencies else float("nan")
    print(
        f"[{served.name}] {served.claims} links at {args.concurrency} at a time: {rate:.1f} claims/s "
        f"({len(served.latencies)} in {served.wall:.1f} s), errors {len(served.errors)}, claim p50 {p50 * 1000:.0f} ms "
        f"p95 {p95 * 1000:.0f} ms; web CPU {served.cpu / max(len(served.latencies), 1) * 1000:.1f} ms/claim; "
        f"load average (1, 5, 15 min) at each round's start: {' | '.join(served.loads)}",
        flush=True,
    )
    if served.errors:
        print(f"[{served.name}]   first errors: {sorted(set(served.errors))[:5]}", flush=True)
    return {"name": served.name, "rate": rate, "p95": p95}


def production_portal_env(sandbox: "SandboxProcess") -> dict[str, str]:
    """The portal's environment on production settings for a bench (this one's gunicorn, bench/claim_cpu.py's
    process): DEBUG off, the sandbox as SmartPages, the claim rate raised (every holder here is 127.0.0.1), and
    the static files collected, as the image build does (production pages name collectstatic's hashed files)."""
    static_root = str(ROOT / "var" / "bench-static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "STATIC_ROOT": static_root},
        check=True,
    )
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret-key-" + "x" * 40,
        "SMARTPASS_LINK_KEYS": os.environ.get("SMARTPASS_LINK_KEYS", "test:" + "A" * 43 + "="),
        "SMARTPAGES_API_URL": sandbox.url,
        "SMARTPAGES_KEY_ID": KEY_ID,
        "SMARTPAGES_KEY_TOKEN": KEY_TOKEN,
        "CLAIM_RATE": "1000000/m",
        "STATIC_ROOT": static_root,
    }


def surge_main(args) -> None:
    import asyncio

    sandbox = SandboxProcess()
    sandbox.ask("latency", args.upstream_ms / 1000)
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
    # Production settings (DEBUG off, persistent connections) behind the TLS proxy, which the holders' client
    # plays: X-Forwarded-Proto https. Only the claim rate limit is raised: every holder here is 127.0.0.1.
    env = {
        key: value
        for key, value in os.environ.items()
        if key in {"PATH", "HOME", "LANG", "DATABASE_URL", "CELERY_BROKER_URL", "CACHE_REDIS_URL", "CELERY_QUEUE"}
    }
    env.update(production_portal_env(sandbox))
    env.update(
        {
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CLIENT_IP_HEADER": "X-Real-IP",
            "MEDIA_ROOT": str(ROOT / "var" / "bench-media"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(dict(item.split("=", 1) for item in args.env))
    run_tag = uuid.uuid4().hex[:6]
    print(
        f"surge: upstream create {args.upstream_ms} ms, {args.links} links at {args.concurrency} at a time "
        f"({args.before_links} for 'before'), in {args.rounds} interleaved rounds per configuration; "
        f"{args.one_link} holders on one link; {os.cpu_count()} CPUs; {load_average()}",
        flush=True,
    )
    configs = dict(SURGE_CONFIGS) | (FLOOR_CONFIGS if args.floor else {})
    for spec in args.config:
        label, _, extra = spec.partition("=")
        configs[label] = extra.split()
    names = args.only or list(configs)
    every, results = [], []
    try:
        every = [Served(name, configs[name], env) for name in names]

        def paths_for(served: Served, count: int, round_no: int) -> list[str]:
            return [
                link_url(
                    "",
                    sandbox.plain_template_id,
                    {"name": f"Félagi {n}", "email": f"felagi{n}-{served.name}-{round_no}-{run_tag}@example.is"},
                )
                for n in range(count)
            ]

        # Warm-up: every worker (and thread) loads its code, templates and connections before the clock starts.
        for served in every:
            served.surge_round(paths_for(served, 40, -1), 20)
            served.latencies, served.errors, served.wall, served.cpu, served.claims = [], [], 0, 0, 0
            served.loads, served.rss_rounds = [], []
        rss_before = {served.name: served.rss() for served in every}
        members_before, posts_before = Member.objects.count(), sandbox.ask("posts")
        # Rounds interleaved (and their order turned each round), so a change in the machine's load falls on
        # every configuration alike.
        for round_no in range(args.rounds):
            for served in every if round_no % 2 == 0 else every[::-1]:
                count = (args.before_links if served.name == "before" else args.links) // args.rounds
                served.surge_round(paths_for(served, count, round_no), args.concurrency)
        made, posts = Member.objects.count() - members_before, sandbox.ask("posts") - posts_before
        results = [surge_report(served, args) for served in every]
        claimed = sum(len(served.latencies) for served in every if served.name not in FLOOR_CONFIGS)
        print(f"members made {made}, upstream creates {posts}, successful claims {claimed}", flush=True)
        for served in every:
            print(
                f"[{served.name}] RSS per web process MiB, before → after the surge: "
                + ", ".join(f"{b:.0f} → {a:.0f}" for b, a in zip(rss_before[served.name], served.rss(), strict=True))
                + "; mean after each round: "
                + " → ".join(f"{rss:.1f}" for rss in served.rss_rounds),
                flush=True,
            )

        for served in every:
            if served.name in FLOOR_CONFIGS:  # a floor makes no member: nothing to count
                continue
            email = f"surge-{served.name}-{run_tag}@example.is"
            one = link_url("", sandbox.autofill_template_id, {"name": "Percy PassKit", "email": email})
            posts_before = sandbox.ask("posts")
            load_before = load_average()
            latencies, errors, pages = asyncio.run(served.one_link_at_once(one, args.one_link))
            p50 = percentile(latencies, 0.5) if latencies else float("nan")
            p95 = percentile(latencies, 0.95) if latencies else float("nan")
            print(
                f"[{served.name}] {args.one_link} holders on one autofill link at once: members "
                f"{Member.objects.filter(external_id=email).count()}, upstream passes "
                f"{sandbox.ask('passes_for', email)} (creates {sandbox.ask('posts') - posts_before}), pass pages "
                f"{len(pages)}, errors {len(errors)}, press → pass page p50 {p50 * 1000:.0f} ms p95 {p95 * 1000:.0f} "
                f"ms; {load_before} → {load_average()}",
                flush=True,
            )
            if errors:
                print(f"[{served.name}]   first errors: {sorted(set(errors))[:5]}", flush=True)
    finally:
        for served in every:
            served.stop()
        sandbox.stop()
    baseline = results[0]
    for result in results[1:] if baseline["rate"] else []:
        print(
            f"{result['name']} vs {baseline['name']}: {result['rate'] / baseline['rate']:.2f}× the claims/s, "
            f"p95 {result['p95']:.2f} s vs {baseline['p95']:.2f} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per gunicorn worker")
    parser.add_argument("--new", type=int, default=400, help="claims of distinct links (new members)")
    parser.add_argument("--existing", type=int, default=400, help="claims of one already-claimed autofill link")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads for the first two phases")
    parser.add_argument("--race", type=int, default=200, help="simultaneous claims of one fresh autofill link")
    surge = parser.add_argument_group("--surge: holders in a surge, each serving configuration side by side")
    surge.add_argument("--surge", action="store_true", help="run the surge instead of the phases above")
    surge.add_argument("--links", type=int, default=5000, help="distinct links claimed (default 5000)")
    surge.add_argument(
        "--before-links", type=int, default=1000, help="distinct links for the slow baseline (default 1000)"
    )
    surge.add_argument("--rounds", type=int, default=5, help="interleaved rounds per configuration (default 5)")
    surge.add_argument(
        "--surge-concurrency", dest="surge_concurrency", type=int, default=200, help="holders at a time (default 200)"
    )
    surge.add_argument("--one-link", type=int, default=500, help="holders on one autofill link at once")
    surge.add_argument("--upstream-ms", type=int, default=100, help="the sandbox's answer time per create")
    surge.add_argument(
        "--config", action="append", default=[], help="another configuration: NAME='gunicorn args' (repeatable)"
    )
    surge.add_argument(
        "--floor",
        action="store_true",
        help="also serve claims that do nothing, through Django and through plain WSGI (bench/floor)",
    )
    surge.add_argument("--only", action="append", help="run only these configurations, in this order")
    surge.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for every configuration's web processes (repeatable)"
    )
    args = parser.parse_args()
    if args.surge:
        args.concurrency = args.surge_concurrency
        surge_main(args)
        return

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
