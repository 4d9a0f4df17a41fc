"""Benchmark: the SmartPages client with its deadline watchdog and byte-capped streaming read (issue 22) against
the client as it was before (`git show <REF>:templates_sync/client.py`, urllib3's own retries and
`response.data`), in the same run.

Two figures:
- the time to fetch and parse every page of 10,000 templates (page size 100, the sandbox in a process of its
  own), median of --repeat interleaved runs, with CPU seconds of this process: the cost of the watchdog timer
  and the piecewise read per call;
- the peak resident memory of a fresh process that fetches one page answered with a gzip bomb (--bomb bytes
  once inflated), for each client: what a worker pays for such a reply.

    .venv/bin/python bench/client.py [--templates 10000] [--repeat 5] [--bomb 500000000] [--before main]
"""

import argparse
import importlib.util
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("DEBUG", "1")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_sandbox(templates: int, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "smartpages_sandbox", "--port", str(port), "--templates", str(templates), *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the sandbox did not start")


def _load_client(which: str, before_ref: str):
    import django

    django.setup()
    if which == "now":
        from templates_sync import client

        return client
    source = subprocess.run(
        ["git", "show", f"{before_ref}:templates_sync/client.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "client_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("client_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["client_before"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fetch_all(client_module, url: str) -> tuple[float, float, int]:
    client = client_module.SmartPagesClient(base_url=url, key_id="sandbox", key_token="sandbox-secret")
    started, cpu = time.perf_counter(), time.process_time()
    page, items = 0, 0
    while True:
        got = client.list_templates(page=page, page_size=100)
        items += len(got.data)
        page += 1
        if page >= got.total_pages:
            break
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    client.close()
    return wall, cpu, items


def _bomb_child(which: str, url: str, before_ref: str) -> None:
    """In a fresh process: fetch one bombed page, print the outcome and the peak resident memory."""
    client_module = _load_client(which, before_ref)
    client = client_module.SmartPagesClient(base_url=url, key_id="sandbox", key_token="sandbox-secret")
    started = time.perf_counter()
    try:
        client.list_templates(page=0, page_size=100)
        outcome = "read whole"
    except Exception as exc:  # noqa: BLE001 - the outcome is printed
        outcome = type(exc).__name__
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{outcome}\t{peak_mb:.0f}\t{time.perf_counter() - started:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--templates", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bomb", type=int, default=500_000_000)
    parser.add_argument("--before", default="main", help="git ref of the client to compare with (default main)")
    parser.add_argument("--bomb-child", nargs=2, metavar=("WHICH", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bomb_child:
        _bomb_child(*args.bomb_child, before_ref=args.before)
        return

    clients = {"before": _load_client("before", args.before), "now": _load_client("now", args.before)}
    sandbox, url = _start_sandbox(args.templates)
    try:
        runs = {name: [] for name in clients}
        for _ in range(args.repeat):
            for name, module in clients.items():
                runs[name].append(_fetch_all(module, url))
    finally:
        sandbox.terminate()
        sandbox.wait()
    load = os.getloadavg()
    print(
        f"templates {args.templates}, page size 100, median of {args.repeat} interleaved runs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"
    )
    base_wall = statistics.median(run[0] for run in runs["before"])
    for name, results in runs.items():
        wall, cpu = statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)
        print(
            f"  fetch every page, client {name:6}  wall {wall:.3f}s  ratio {wall / base_wall:.2f}  cpu {cpu:.3f}s "
            f"({results[0][2]} templates)"
        )

    bombed, bomb_url = _start_sandbox(1, "--gzip-bomb", str(args.bomb), "--fault-scope", "templates")
    try:
        print(f"one page answered with a gzip bomb ({args.bomb:,} bytes inflated), each in a fresh process:")
        for name in ("before", "now"):
            child = subprocess.run(
                [sys.executable, __file__, "--before", args.before, "--bomb-child", name, bomb_url],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            outcome, peak, seconds = child.stdout.strip().splitlines()[-1].split("\t")
            print(f"  client {name:6}  {outcome:16}  peak resident memory {peak} MB  {seconds} s")
    finally:
        bombed.terminate()
        bombed.wait()


if __name__ == "__main__":
    main()
