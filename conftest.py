"""Shared test fixtures: the SmartPages sandbox over real HTTP, staff users by role, a real Celery worker
process on the configured broker (Redis in CI), and Chromium through Playwright."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from templates_sync.sandbox import Faults, SmartPagesSandbox

# Property tests judge correctness, not speed: a loaded CI machine must not fail them on a deadline.
hypothesis_settings.register_profile("portal", deadline=None)
hypothesis_settings.load_profile("portal")
# `pytest --hypothesis-profile thorough …`: thousands of examples where a test asks for more than the default
# (members/tests/test_identity_phone_fast_path.py), for a one-off run rather than every CI run.
hypothesis_settings.register_profile("thorough", hypothesis_settings.get_profile("portal"), max_examples=5000)

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"
SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN = "sandbox", "sandbox-secret"


# --- the upstream -----------------------------------------------------------------------------------------
@pytest.fixture
def sandbox(settings):
    """A fresh sandbox (25 templates) on a free port, with the portal's settings pointed at it."""
    server = SmartPagesSandbox(templates=25, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN).start()
    settings.SMARTPAGES_API_URL = server.url
    settings.SMARTPAGES_KEY_ID = SANDBOX_KEY_ID
    settings.SMARTPAGES_KEY_TOKEN = SANDBOX_KEY_TOKEN
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_sandbox():
    """One sandbox for the whole session, for worker processes started once (they read its URL at start)."""
    server = SmartPagesSandbox(templates=25, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def live_sandbox(session_sandbox, settings):
    """The session sandbox, faults off, with this process's settings pointed at it too."""
    session_sandbox.faults = Faults()
    settings.SMARTPAGES_API_URL = session_sandbox.url
    settings.SMARTPAGES_KEY_ID = SANDBOX_KEY_ID
    settings.SMARTPAGES_KEY_TOKEN = SANDBOX_KEY_TOKEN
    return session_sandbox


# --- people -----------------------------------------------------------------------------------------------
@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from portal.roles import sync_role_permissions

    def make(username: str, role: str, password: str = "correct horse battery") -> object:
        sync_role_permissions()
        user = get_user_model().objects.create_user(username=username, password=password)
        user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def manager(make_user):
    return make_user("maria", "manager")


@pytest.fixture
def viewer(make_user):
    return make_user("vigdis", "viewer")


# --- a real Celery worker -----------------------------------------------------------------------------------
def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        pytest.fail("Worker tests need PostgreSQL: set DATABASE_URL (make test does).")
    env = dict(os.environ)
    env.update({"DJANGO_SETTINGS_MODULE": "portal.settings_test", "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_celery(extra_env: dict[str, str], *, beat: bool = False, log_name: str = "worker") -> subprocess.Popen:
    """Start `celery worker` (optionally with beat) as a real process and wait until it is ready."""
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.fail("Worker tests need a Redis broker: set CELERY_BROKER_URL (make test does).")
    env = _worker_env(extra_env)
    subprocess.run([sys.executable, "-m", "celery", "-A", "portal", "purge", "-f"], env=env, cwd=ROOT,
                   check=True, capture_output=True)  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"{log_name}.log", "w")
    command = [sys.executable, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO", "--concurrency=2",
               "--without-mingle", "--without-gossip", "-n", f"{log_name}-{os.getpid()}@%h"]  # fmt: skip
    if beat:
        command += ["--beat", "--schedule", str(ARTIFACTS / f"{log_name}-beat-schedule")]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The Celery worker exited early; see {log.name}")
        if " ready." in (ARTIFACTS / f"{log_name}.log").read_text():
            return process
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"The Celery worker did not become ready in 60 s; see {log.name}")


def stop_celery(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, session_sandbox):
    """A worker for the session, on the test database and the session sandbox. Tests that use it need
    committed data: use `transactional_db` or `live_server`."""
    process = start_celery({
        "SMARTPAGES_API_URL": session_sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
    })  # fmt: skip
    yield process
    stop_celery(process)


def wait_for(condition, *, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail the test with `message` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout} s waiting for {message}")


# --- the browser --------------------------------------------------------------------------------------------
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="session")
def browser():
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    browser_page = context.new_page()
    yield browser_page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        browser_page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def login(page, live_server, username: str, password: str = "correct horse battery") -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
