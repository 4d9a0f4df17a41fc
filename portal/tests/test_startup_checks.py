"""Missing secrets stop web and workers at start with a clear message, yet the command that makes the first
link key runs with nothing configured."""

import subprocess
import sys

import pytest

from conftest import ROOT, production_env
from links.tokens import parse_link_keys

pytestmark = pytest.mark.django_db


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
