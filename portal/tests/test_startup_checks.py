"""Missing secrets stop web and workers at start with a clear message, yet the command that makes the first
link key runs with nothing configured."""

import subprocess
import sys

import pytest

from conftest import ROOT, production_env, stop_process, wait_for
from links.tokens import parse_link_keys

# Every test here starts a process (gunicorn, celery, manage.py).
pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def _run(command, env):
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_generate_link_key_works_with_nothing_configured():
    made = _run([sys.executable, "manage.py", "generate_link_key", "--id", "first"], {"PATH": production_env()["PATH"]})
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("first:")
    assert parse_link_keys(made.stdout.strip()).keys[0][0] == "first"


def test_gunicorn_refuses_to_start_without_a_secret_key():
    env = production_env({"SECRET_KEY": "too-short"})
    web = _run([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", "127.0.0.1:0"], env)
    assert web.returncode != 0
    assert "SECRET_KEY must be set to a random string of 50 or more characters." in web.stdout + web.stderr


@pytest.mark.parametrize("program", ["worker", "beat"])
def test_celery_refuses_to_start_without_link_keys(program):
    env = production_env({"SMARTPASS_LINK_KEYS": ""})
    celery = _run([sys.executable, "-m", "celery", "-A", "portal", program], env)
    assert celery.returncode == 1
    assert "Refusing to start: ?: (links.E001) SMARTPASS_LINK_KEYS is empty" in celery.stderr


def test_beat_makes_the_folder_of_its_schedule_file(tmp_path):
    # A fresh checkout or a new container has no var/: beat used to crash on opening its schedule there.
    schedule = tmp_path / "var" / "celerybeat-schedule"
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "beat", "--schedule", str(schedule)],
        cwd=ROOT,
        env=production_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: list(schedule.parent.glob("celerybeat-schedule*")), timeout=60, message="the schedule file")
        assert beat.poll() is None  # still running
    finally:
        stop_process(beat)
