"""The production deployment, as far as it can be checked without Docker: docker-compose.yml's services,
their start order and what is published; what the image holds (.dockerignore); and the image's contents
started the way the compose file starts them, with the web healthcheck run for real against them."""

import fnmatch
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ROOT, production_env, start_gunicorn, stop_process

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PORTAL_SERVICES = ("migrate", "web", "worker", "beat")
DOCKERIGNORE = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def test_the_stack_runs_the_portal_from_one_image_beside_its_services():
    assert set(SERVICES) == {*PORTAL_SERVICES, "proxy", "redis", "postgres"}
    for name in PORTAL_SERVICES:
        assert (SERVICES[name]["build"], SERVICES[name]["image"]) == (".", "smartpass-portal"), name
    assert SERVICES["web"]["command"] == "gunicorn -c deploy/gunicorn.conf.py"
    assert SERVICES["worker"]["command"].startswith("celery -A portal worker")
    assert SERVICES["beat"]["command"] == "celery -A portal beat"  # its schedule: var/, made when missing


def test_web_worker_and_beat_wait_for_the_migration_to_finish():
    assert SERVICES["migrate"]["command"] == "python manage.py migrate --no-input"
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "worker", "beat"):
        depends_on = SERVICES[name]["depends_on"]
        assert depends_on["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends_on["postgres"] == {"condition": "service_healthy"}, name
        assert "redis" in depends_on, name
    assert SERVICES["proxy"]["depends_on"] == {"web": {"condition": "service_healthy"}}


def test_only_the_tls_proxy_is_reachable_from_outside_and_web_only_from_it():
    assert {name for name, service in SERVICES.items() if service.get("ports") or service.get("network_mode")} == {
        "proxy"
    }
    assert {published.split(":")[0] for published in SERVICES["proxy"]["ports"]} == {"80", "443"}
    on_edge = {name for name, service in SERVICES.items() if "edge" in service.get("networks", [])}
    assert on_edge == {"proxy", "web"}
    assert SERVICES["proxy"]["networks"] == ["edge"]
    # The proxy sets the client address header web trusts for rate limits, and forwards to web's port.
    web_env = SERVICES["web"]["environment"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert web_env["CLIENT_IP_HEADER"] == "X-Real-IP" and "header_up X-Real-IP {remote_host}" in caddyfile
    assert f"reverse_proxy web:{web_env['PORT']}" in caddyfile
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in SERVICES["proxy"]["volumes"]


def _ignored(path: str) -> bool:
    """Docker's .dockerignore matching, for the pattern forms the file uses (paths, globs, `**/` prefixes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in (entry.rstrip("/") for entry in DOCKERIGNORE):
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".venv/bin/python",
        "db.sqlite3",
        "var/media/links/2026/01/x/input.csv",
        "var/celerybeat-schedule",
        "staticfiles/portal/portal.css",
        ".git/config",
        "links/tests/test_views.py",
        "conftest.py",
        "links/__pycache__/views.cpython-311.pyc",
        "sandbox/server.py",
        "sandbox/management/commands/smartpages_sandbox.py",
    ],
)
def test_secrets_local_data_tests_and_the_sandbox_stay_out_of_the_image(path):
    assert _ignored(path)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """What `docker build .` copies into /app from a fresh checkout: the repository less .dockerignore."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    destination = tmp_path_factory.mktemp("image") / "app"
    for name in listed:
        source = ROOT / name
        if not _ignored(name) and source.is_file() and not source.is_symlink():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def _run(command: list[str], *, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _env_file(path) -> dict[str, str]:
    entries = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in entries}


@pytest.mark.slow
@pytest.mark.django_db
def test_the_image_starts_from_an_empty_env_file_to_a_healthy_web(image_files):
    """The README's steps on the image's files: make a link key with nothing configured, collect static files
    as the Dockerfile does (no secrets), then run web as docker-compose.yml does and its healthcheck."""
    bare = {"PATH": production_env()["PATH"]}
    made = _run([sys.executable, "manage.py", "generate_link_key"], cwd=image_files, env=bare)
    assert made.returncode == 0, made.stderr
    link_key = made.stdout.strip()
    collected = _run([sys.executable, "manage.py", "collectstatic", "--no-input"], cwd=image_files, env=bare)
    assert collected.returncode == 0, collected.stderr
    assert not (image_files / "sandbox").exists()

    # .env.example filled in as the README says, under docker-compose.yml's environment for web; only the
    # addresses of PostgreSQL and Redis are this machine's instead of the compose network's.
    env = production_env()
    compose_env = {key: str(value) for key, value in SERVICES["web"]["environment"].items()}
    env |= _env_file(ROOT / ".env.example") | compose_env
    env |= {"SECRET_KEY": production_env()["SECRET_KEY"], "SMARTPASS_LINK_KEYS": link_key}
    env |= {key: production_env()[key] for key in ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT")}
    env |= {key: value for key, value in production_env().items() if key == "CACHE_REDIS_URL"}
    healthcheck = SERVICES["web"]["healthcheck"]["test"]
    assert healthcheck[:2] == ["CMD", "python"]
    check_command = [sys.executable, *healthcheck[2:]]

    web, url, log = start_gunicorn(
        env, command=shlex.split(SERVICES["web"]["command"]), cwd=image_files, log_name="compose-web"
    )
    env["PORT"] = url.rsplit(":", 1)[1]
    try:
        healthy = _run(check_command, cwd=image_files, env=env)
        assert healthy.returncode == 0, healthy.stderr + log.read_text()
        # The exemption is narrow: any other page over plain HTTP is still sent to HTTPS.
        request = urllib.request.Request(f"{url}/login/", headers={"Host": "portal.example.is"})
        with pytest.raises(urllib.error.HTTPError) as redirect:
            urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
        assert redirect.value.code == 301
        assert redirect.value.headers["Location"] == "https://portal.example.is/login/"
    finally:
        stop_process(web)
    unhealthy = _run(check_command, cwd=image_files, env=env)
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
