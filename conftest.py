"""Shared test fixtures: the SmartPages sandbox over real HTTP, staff users by role, a real Celery worker
process on the configured broker (Redis in CI), and Chromium through Playwright.

One module of ~780 lines because pytest reads fixtures shared across apps from the root conftest only; each
app's own fixtures are in its tests/conftest.py. Its sections: the test database, the upstream, a real SMTP
server, races, people, a real Celery worker, production-shaped processes, S3-compatible media, processes a
fault test stops and starts, the browser."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import settings as hypothesis_settings

from sandbox import Faults, SmartPagesSandbox

# Property tests judge correctness, not speed: a loaded CI machine must not fail them on a deadline.
hypothesis_settings.register_profile("portal", deadline=None)
hypothesis_settings.load_profile("portal")
# `pytest --hypothesis-profile thorough …`: thousands of examples where a test asks for more than the default
# (members/tests/test_identity_phone_fast_path.py), for a one-off run rather than every CI run.
hypothesis_settings.register_profile("thorough", hypothesis_settings.get_profile("portal"), max_examples=5000)

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts"
SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN = "sandbox", "sandbox-secret"


# --- the test database ------------------------------------------------------------------------------------
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The quick suite's processes (pytest-xdist): the first to need a database migrates a template database
    # (unless the one a run before made came from the same migration files), and each copies it (CREATE
    # DATABASE … TEMPLATE, a fraction of a second) rather than migrating a database of its own — 10 s of CPU
    # per process, on a machine of two cores. Run in one process (the whole suite), pytest-django's own
    # django_db_setup is used unchanged.
    @pytest.fixture(scope="session")
    def django_db_setup(
        request, django_test_environment, django_db_blocker, django_db_modify_db_settings, tmp_path_factory
    ):
        import fcntl

        from django.conf import settings
        from django.db import connection

        assert connection.vendor == "postgresql", "the quick suite on several processes runs on PostgreSQL"
        verbosity = request.config.option.verbose
        worker = os.environ["PYTEST_XDIST_WORKER"]
        own = connection.settings_dict["TEST"]["NAME"]  # pytest-django's name for this process: test_…_gw0
        template = own.removesuffix(f"_{worker}") + "_template"
        configured = connection.settings_dict["NAME"]
        run_folder = tmp_path_factory.getbasetemp().parent  # one per run, shared by its processes
        with django_db_blocker.unblock(), open(run_folder / "template-database.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until this process has its copy
            made = run_folder / "template-database.made"
            if not made.exists():
                migrations = _migrations_fingerprint()
                rebuild = request.config.getoption("create_db")  # pytest --create-db: a fresh template too
                if rebuild or _database_comment(connection, template) != migrations:
                    connection.settings_dict["TEST"]["NAME"] = template
                    connection.creation.create_test_db(verbosity=verbosity, autoclobber=True, serialize=False)
                    with connection.cursor() as cursor:
                        cursor.execute(f'COMMENT ON DATABASE "{template}" IS %s', [migrations])
                made.touch()
            connection.close()  # no session may be open on a template while it is copied
            with connection.creation._nodb_cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{own}"')
                cursor.execute(f'CREATE DATABASE "{own}" TEMPLATE "{template}"')
            settings.DATABASES["default"]["NAME"] = connection.settings_dict["NAME"] = own
        yield
        with django_db_blocker.unblock():
            connection.creation.destroy_test_db(old_database_name=configured, verbosity=verbosity)

    def _migrations_fingerprint() -> str:
        """A digest of what a migrate writes: Django's version, every migration file of every installed app, the
        project's modules those files import (the status-count triggers' SQL), and the post_migrate receivers
        (the roles' permissions). A template made from the same is the same database, so a later run copies it
        without migrating; `--create-db` makes it afresh whatever the digest."""
        import ast
        import hashlib
        import importlib.util

        import django
        from django.apps import apps
        from django.db.migrations.loader import MigrationLoader

        def project_imports(module_name: str) -> set[Path]:
            """The project's files that module `module_name` imports (`from X import …`, relative ones too)."""
            found = set()
            for node in ast.walk(ast.parse(Path(sys.modules[module_name].__file__).read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    name = importlib.util.resolve_name("." * node.level + node.module, module_name.rpartition(".")[0])
                    spec = importlib.util.find_spec(name)
                    if spec and spec.origin and ROOT in Path(spec.origin).parents:
                        found.add(Path(spec.origin))
            return found

        migrations = [migration.__module__ for migration in MigrationLoader(None).disk_migrations.values()]
        configs = [config.__module__ for config in apps.get_app_configs()]  # where post_migrate receivers connect
        files = {Path(sys.modules[name].__file__) for name in migrations + configs}
        for name in migrations + configs:
            if ROOT in Path(sys.modules[name].__file__).parents:
                files |= project_imports(name)
        digest = hashlib.sha256(django.get_version().encode())
        for path in sorted(files):
            digest.update(str(path).encode() + path.read_bytes())
        return digest.hexdigest()

    def _database_comment(connection, name: str) -> str | None:
        with connection.creation._nodb_cursor() as cursor:
            cursor.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", [name])
            found = cursor.fetchone()
        return found[0] if found else None


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


@pytest.fixture
def club(db, sandbox):
    """The sandbox's demo template (the seed's club card) in the mirror, as a sync would have stored it."""
    from members.tests.factories import mirror_template

    return mirror_template()


def pytest_collection_modifyitems(items):
    # Browser and worker tests start processes: they are slow by nature, so `-m "not slow"` leaves them out.
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("worker"):
            item.add_marker(pytest.mark.slow)


# --- a real SMTP server ----------------------------------------------------------------------------------------
class SmtpInbox:
    """What the SMTP server of `smtp_process` accepted: `messages` is [(envelope recipients, parsed message)] in
    the order they arrived. Faults by recipient are described in sandbox/smtp.py."""

    def __init__(self, port: int, folder: Path):
        self.port, self.folder = port, folder

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list:
        from email import message_from_bytes, policy

        found = []
        for path in sorted(self.folder.glob("*.eml"), key=lambda item: int(item.name.split("-")[0])):
            first, _newline, rest = path.read_bytes().partition(b"\r\n")
            recipients = first.decode().removeprefix("X-Envelope-To: ").split(", ")
            found.append((recipients, message_from_bytes(rest, policy=policy.default)))
        return found

    def count(self) -> int:
        return sum(1 for _ in self.folder.glob("*.eml"))

    def clear(self) -> None:
        for path in self.folder.glob("*.eml"):
            path.unlink()


@pytest.fixture(scope="session")
def smtp_process():
    """aiosmtpd in a process of its own (sandbox/smtp.py), once a session, writing what it accepts to a folder."""
    port, folder = free_port(), Path(tempfile.mkdtemp(prefix="smartpass-smtp-"))
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "smtp.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.smtp", "--port", str(port), "--folder", str(folder)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: _answers(port) or process.poll() is not None, timeout=30, message="the SMTP server to start")
    if process.poll() is not None:
        pytest.fail(f"The SMTP server exited; see {ARTIFACTS / 'smtp.log'}")
    yield SmtpInbox(port, folder)
    stop_process(process)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def smtp_server(smtp_process, settings):
    """The session's SMTP server, emptied, with this process's email settings pointed at it (the same as
    EMAIL_URL=smtp://127.0.0.1:PORT; `smtp_server.url` is that URL for worker processes)."""
    smtp_process.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_process.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 3
    settings.EMAIL_CONFIGURED = True
    yield smtp_process
    smtp_process.clear()


@pytest.fixture
def twilio(settings):
    """A local server speaking Twilio's Messages API (sandbox/twilio.py) on a free port, with SMS_URL on it."""
    from sandbox.twilio import TwilioSandbox

    server = TwilioSandbox().start()
    settings.SMS_URL = server.sms_url()
    yield server
    server.stop()


# --- races -----------------------------------------------------------------------------------------------
# Races hold a database connection per thread (50 in the largest quick ones): two of them at once on the two
# pytest-xdist processes came to over PostgreSQL's max_connections (100), and a thread that could not connect
# failed its test now and then. A lock file lets one race run on this machine at a time.
_RACE_LOCK = Path(tempfile.gettempdir()) / "smartpass-test-races.lock"


def _run_at_a_barrier(count: int, work) -> tuple[list, list]:
    """Run `work(barrier)` in `count` threads that meet at one barrier; returns (results, errors).

    Each thread closes its own database connection at the end, so a transactional test can drop its tables.
    """
    with _RACE_LOCK.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # let go when the file closes
        return _run_threads_at_a_barrier(count, work)


def _run_threads_at_a_barrier(count: int, work) -> tuple[list, list]:
    from django.db import connection

    barrier = threading.Barrier(count)
    results, errors, lock = [], [], threading.Lock()

    def run():
        try:
            result = work(barrier)
            with lock:
                results.append(result)
        except Exception as exc:  # noqa: BLE001 - collected for the test to assert on
            with lock:
                errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


@pytest.fixture
def run_at_a_barrier():
    """`run_at_a_barrier(count, work)`: threads released together, for races on PostgreSQL."""
    return _run_at_a_barrier


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
def suite_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a process (worker, gunicorn) on the suite's settings and its test database."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        pytest.fail("Worker tests need PostgreSQL: set DATABASE_URL (make test does).")
    env = dict(os.environ)
    env.update(
        {"DJANGO_SETTINGS_MODULE": "portal.settings_test", "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    )
    env.update(extra)
    return env


def start_celery(extra_env: dict[str, str], *, beat: bool = False, log_name: str = "worker") -> subprocess.Popen:
    """Start `celery worker` (optionally with beat) as a real process and wait until it is ready."""
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.fail("Worker tests need a Redis broker: set CELERY_BROKER_URL (make test does).")
    env = suite_env(extra_env)
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "portal", "purge", "-f"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"{log_name}.log", "w")
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "portal",
        "worker",
        "--loglevel=INFO",
        "--concurrency=2",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"{log_name}-{os.getpid()}@%h",
    ]
    if beat:
        command += ["--beat", "--schedule", str(ARTIFACTS / f"{log_name}-beat-schedule")]
    # A session of its own, so that stop_process can end its pool and beat children with it.
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.own_session = True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The Celery worker exited early; see {log.name}")
        if " ready." in (ARTIFACTS / f"{log_name}.log").read_text():
            return process
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"The Celery worker did not become ready in 60 s; see {log.name}")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM and wait; past 20 s, SIGKILL. A Celery worker (started in a session of its own) is then ended with
    its whole group: killing only the worker once left its beat child running, an orphan that went on sending
    sweeps to the suite's broker and rewriting its schedule file, and broke a later run's beat."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if getattr(process, "own_session", False):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group outlived it


def kill_with_sigkill(process: subprocess.Popen) -> None:
    """SIGKILL a worker's pool processes and then the worker itself, as when a host dies: nothing of it gets to
    clean up (no message is acknowledged or given back), and no orphaned child goes on with its task."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    process.kill()
    process.wait(timeout=30)


def kill_worker_part_way(env: dict[str, str], *, log_name: str, start, part_way, message: str, timeout: float = 30):
    """Start a worker on `env`, call `start()` (which hands it work), wait until `part_way(what start returned)`
    holds, then SIGKILL the worker: the work is left as a dead worker leaves it. Returns what `start()` returned."""
    worker = start_celery(env, log_name=log_name)
    try:
        started = start()
        wait_for(lambda: part_way(started), timeout=timeout, interval=0.05, message=message)
        return started
    finally:
        kill_with_sigkill(worker)


def finish_with_beat(env: dict[str, str], *, log_name: str, finished, message: str, timeout: float = 120):
    """A worker with beat on `env` (so the recovery sweep runs) until `finished()` holds; returns its value."""
    worker = start_celery(env, beat=True, log_name=log_name)
    try:
        return wait_for(finished, timeout=timeout, message=message)
    finally:
        stop_process(worker)


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, session_sandbox):
    """A worker for the session, on the test database and the session sandbox. Tests that use it need
    committed data: use `transactional_db` or `live_server`."""
    process = start_celery(
        {
            "SMARTPAGES_API_URL": session_sandbox.url,
            "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
            "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        }
    )
    yield process
    stop_process(process)


@pytest.fixture
def own_queue(monkeypatch) -> str:
    """A Celery queue of the test's own. This process sends its tasks there, and so does every process the test
    starts (suite_env passes CELERY_QUEUE on): the session's worker, left running by an earlier test on other
    settings, consumes the suite's queue and would otherwise take the test's tasks. Not for tests that use
    `celery_worker_process`, which consumes the suite's queue."""
    from celery import current_app

    queue = f"{os.environ.get('CELERY_QUEUE', 'celery')}-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("CELERY_QUEUE", queue)
    send_task = current_app.send_task
    monkeypatch.setattr(
        current_app, "send_task", lambda *args, **options: send_task(*args, **{"queue": queue, **options})
    )
    return queue


@pytest.fixture
def recovery_beat(celery_worker_process):
    """`celery beat` alone, sending the recovery sweep every second to the session's worker: retries due later
    wait in their rows and only a sweep sends them (background.recovery), as beat does in production."""
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "recovery-beat.log", "w")
    schedule = ARTIFACTS / "recovery-beat-schedule"
    schedule.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "beat", "--schedule", str(schedule)],
        env=suite_env({"SWEEP_INTERVAL": "1"}),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: "Starting..." in (ARTIFACTS / "recovery-beat.log").read_text(), message="celery beat to start")
    yield process
    stop_process(process)


# --- production-shaped processes (gunicorn, worker and beat with DEBUG off) -----------------------------------
def run_on_sqlite(script: str, tmp_path: Path, *, timeout: float = 120, **env: str) -> list[str]:
    """Run `script` with `manage.py shell` in a process of its own on a fresh SQLite file in `tmp_path` (the
    embedded default `make run` uses), with `env` added to its environment: the lines it printed. A failed run
    fails the test with the process's stderr."""
    environment = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def terminate_own_backend() -> None:
    """Kill this connection's PostgreSQL backend from another connection, as an administrator or a restart would."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def production_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a production process on the test database and Redis: portal.settings, DEBUG off,
    fresh secrets, and nothing inherited from the test settings (which relax HTTPS and cookies)."""
    env = {key: value for key, value in suite_env({}).items() if key in PRODUCTION_ENV_KEPT}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "SMARTPASS_LINK_KEYS": os.environ["SMARTPASS_LINK_KEYS"],  # the test process's, so tokens open both ways
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "MEDIA_ROOT": tempfile.mkdtemp(prefix="smartpass-prod-media-"),
            "STATIC_ROOT": _collected_static(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@functools.cache
def _collected_static() -> str:
    """Production serves the hashed names collectstatic writes (as the image build does), once a session."""
    root = tempfile.mkdtemp(prefix="smartpass-prod-static-")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "STATIC_ROOT": root},
        check=True,
        capture_output=True,
    )
    return root


# CELERY_QUEUE too: web must send its tasks to the queue the test's workers (started on suite_env) consume.
PRODUCTION_ENV_KEPT = {"PATH", "HOME", "LANG", "DATABASE_URL", "CELERY_BROKER_URL", "CACHE_REDIS_URL", "CELERY_QUEUE"}


def start_gunicorn(
    env: dict[str, str],
    *,
    command: list[str] | None = None,
    cwd: Path = ROOT,
    log_name: str = "gunicorn",
    workers: int = 1,
) -> tuple[subprocess.Popen, str, Path]:
    """gunicorn with the production config (deploy/gunicorn.conf.py, as docker-compose.yml runs it) on a free
    port of 127.0.0.1; returns (process, base URL, log file) once it answers. `env` is the whole environment:
    `production_env()` for production settings, `suite_env()` for the suite's own settings."""
    port = free_port()
    command = command or ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    command = [sys.executable, "-m", *command, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{log_name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, env={**env, "PORT": str(port)}, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited early:\n{log_path.read_text()}")
        if "Booting worker" in log_path.read_text():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return process, f"http://127.0.0.1:{port}", log_path
            except OSError:
                pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"gunicorn did not answer in 60 s; see {log_path}")


def isolated_broker_env() -> dict[str, str]:
    """Broker and cache for processes that must not share their queue with the session's worker (which has
    another MEDIA_ROOT and no bucket, and would take their tasks): the test's own cache database serves as
    both, so no database outside the test's allotment is touched."""
    from django.conf import settings

    location = settings.CACHES["default"]["LOCATION"]
    return {"CELERY_BROKER_URL": location, "CACHE_REDIS_URL": location}


def tls_certificate(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (certfile, keyfile), so gunicorn serves real HTTPS, as the TLS
    proxy does in production: secure cookies and the HTTPS redirect then work as they do there."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)  # its own trust anchor
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(folder / "cert.pem"), str(folder / "key.pem")


# --- S3-compatible media ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3-compatible server, over real HTTP on a free port of 127.0.0.1, for the session."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "moto.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto's server did not start; see {ARTIFACTS / 'moto.log'}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture
def media_bucket(s3_server):
    """A fresh private bucket on the S3 server, with the MEDIA_S3_* environment that points at it."""
    env = {
        "MEDIA_S3_BUCKET": f"media-{uuid.uuid4().hex[:12]}",
        "MEDIA_S3_ENDPOINT_URL": s3_server,
        "MEDIA_S3_REGION": "us-east-1",
        "MEDIA_S3_ACCESS_KEY_ID": "portal-test",
        "MEDIA_S3_SECRET_ACCESS_KEY": "portal-test-secret",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="portal-test",
        aws_secret_access_key="portal-test-secret",
    )
    s3.create_bucket(Bucket=env["MEDIA_S3_BUCKET"])
    return MediaBucket(env=env, client=s3)


@dataclasses.dataclass
class MediaBucket:
    env: dict[str, str]
    client: object

    def object_keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.env["MEDIA_S3_BUCKET"])
        return [item["Key"] for item in listing.get("Contents", [])]


def wait_for(condition, *, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail the test with `message` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"Timed out after {timeout} s waiting for {message}")


# --- processes a fault test stops and starts -----------------------------------------------------------------
class OwnRedis:
    """A `redis-server` of the test's own on a free port (never the machine's), which the test may stop and
    start again: no persistence, so a restart comes back empty, like a Redis that lost its memory."""

    def __init__(self, name: str):
        self.port = free_port()
        self.name = name
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> OwnRedis:
        import redis

        ARTIFACTS.mkdir(exist_ok=True)
        log = open(ARTIFACTS / f"{self.name}-redis.log", "a")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: _pings(redis.Redis.from_url(self.url(), socket_timeout=0.5)),
            timeout=15,
            message="the test's own redis-server",
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def own_redis_env(redis: OwnRedis, sandbox) -> dict[str, str]:
    """The environment of portal processes (gunicorn, workers) on a redis-server of the test's own (the broker on
    database 0, the cache on 1), against `sandbox`."""
    return {
        "CELERY_BROKER_URL": redis.url(0),
        "CACHE_REDIS_URL": redis.url(1),
        "SMARTPAGES_API_URL": sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
    }


@pytest.fixture
def own_redis(request):
    server = OwnRedis(request.node.name[:40]).start()
    yield server
    server.stop()


# --- the browser --------------------------------------------------------------------------------------------
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


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


def second_factor_device(username: str):
    """A confirmed authenticator (django-otp TOTP device) for an account, as if its owner had set one up: for
    tests of production-shaped processes, where MFA_REQUIRED is on."""
    from django.contrib.auth import get_user_model
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = get_user_model().objects.get(username=username)
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


def second_factor_code(device) -> str:
    """The code the authenticator app would show now (RFC 6238, as django-otp checks it)."""
    from django_otp.oath import TOTP

    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits).token():0{device.digits}d}"


def login(page, live_server, username: str, password: str = "correct horse battery") -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
