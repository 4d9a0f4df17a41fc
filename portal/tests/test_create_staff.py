"""`manage.py create_staff`: staff accounts in a role, passwords from a terminal or standard input."""

import io
import os
import pty
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from conftest import ROOT, suite_env

pytestmark = pytest.mark.django_db
STRONG = "lava field at midnight"


def _create_staff(*args, password=STRONG):
    out = io.StringIO()
    call_command("create_staff", *args, "--password-stdin", stdin=io.StringIO(password + "\n"), stdout=out)
    return out.getvalue()


def _logs_in(username, password):
    return Client().post(reverse("login"), {"username": username, "password": password}).status_code == 302


def test_a_new_manager_can_log_in_and_act_but_is_no_superuser():
    assert _create_staff("anna", "--role", "manager", "--email", "Anna@Example.IS") == "Created anna as manager.\n"
    user = get_user_model().objects.get(username="anna")
    assert user.has_perm("templates_sync.run_sync") and user.has_perm("links.upload_links")
    assert (user.is_superuser, user.is_staff, user.email) == (False, True, "Anna@example.is")
    assert [group.name for group in user.groups.all()] == ["manager"]
    assert _logs_in("anna", STRONG)


def test_the_first_admin_manages_staff_and_reads_the_audit_records_and_the_creation_is_recorded():
    from audit.models import StaffAction

    assert _create_staff("ada", "--role", "admin") == "Created ada as admin.\n"
    user = get_user_model().objects.get(username="ada")
    assert user.has_perm("portal.manage_staff") and user.has_perm("audit.view_authevent")
    assert user.has_perm("links.upload_links")  # a manager too
    assert not user.has_perm("audit.delete_authevent") and not user.has_perm("audit.change_staffaction")
    assert (user.is_superuser, user.is_staff) == (False, True)
    created = StaffAction.objects.get(action="staff.created")
    assert (created.actor_name, created.object_repr, created.after["role"]) == ("", "ada", "admin")


def test_reset_mfa_names_an_unknown_account():
    with pytest.raises(CommandError, match="No account is named 'nobody'"):
        call_command("reset_mfa", "nobody")


def test_an_existing_account_changes_role_and_keeps_its_password_when_none_is_given():
    _create_staff("bjorn", "--role", "manager")
    assert _create_staff("bjorn", "--role", "viewer", password="") == "Updated bjorn as viewer.\n"
    user = get_user_model().objects.get(username="bjorn")
    assert [group.name for group in user.groups.all()] == ["viewer"]
    assert not user.has_perm("templates_sync.run_sync") and user.has_perm("templates_sync.view_passtemplate")
    assert not user.is_staff
    assert _logs_in("bjorn", STRONG)


@pytest.mark.parametrize(
    "password,reason",
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("83749261058", "entirely numeric"),
        ("", "needs a password"),
    ],
)
def test_a_weak_or_missing_password_is_refused_and_nothing_is_saved(password, reason):
    with pytest.raises(CommandError, match=reason):
        _create_staff("carl", "--role", "viewer", password=password)
    assert not get_user_model().objects.filter(username="carl").exists()


def test_a_password_like_the_user_name_is_refused():
    with pytest.raises(CommandError, match="too similar to the username"):
        _create_staff("gudrunhelga", "--role", "viewer", password="gudrunhelga1")


def test_without_a_terminal_or_password_stdin_it_says_what_to_do():
    with pytest.raises(CommandError, match="use --password-stdin"):
        call_command("create_staff", "dora", "--role", "viewer", stdin=io.StringIO(""))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_password_is_asked_twice_on_a_real_terminal():
    env = suite_env({})
    pid, terminal = pty.fork()
    if pid == 0:  # the child: manage.py on the new pseudo-terminal, as an operator would run it
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "manage.py", "create_staff", "edda", "--role", "manager"], env)
    output = b""
    for answer in (STRONG, STRONG):
        output += _read_until(terminal, b": ")
        os.write(terminal, answer.encode() + b"\n")
    output += _read_until(terminal, b"\n", after=b"Created")
    os.waitpid(pid, 0)
    assert b"Password (empty keeps an existing account's): " in output and b"Password again: " in output
    assert STRONG.encode() not in output  # not echoed
    assert b"Created edda as manager." in output
    assert _logs_in("edda", STRONG)


def _read_until(fd, end: bytes, after: bytes = b"", timeout: float = 60) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data += os.read(fd, 1024)
        except OSError:
            break
        if data.endswith(end) and after in data:
            return data
    raise AssertionError(f"the command did not prompt as expected; it wrote {data!r}")
