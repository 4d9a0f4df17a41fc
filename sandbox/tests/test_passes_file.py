"""The sandbox remembers (issue 22): run as `make run` runs it (`smartpages_sandbox --passes-file`), its passes
survive a restart, so a member issued in the demo can be refreshed afterwards. Real processes: the command is
started, stopped and started again."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN, free_port, stop_process, wait_for
from members.models import Member
from members.services import issuing, passes
from sandbox import DEMO_TEMPLATE_ID
from templates_sync import sync
from templates_sync.models import PassTemplate

ROOT = Path(__file__).resolve().parents[2]


def _start_sandbox(port: int, passes_file: Path | None) -> subprocess.Popen:
    command = [sys.executable, "manage.py", "smartpages_sandbox", "--port", str(port), "--templates", "3"]
    command += ["--key-id", SANDBOX_KEY_ID, "--key-token", SANDBOX_KEY_TOKEN]
    if passes_file is not None:
        command += ["--passes-file", str(passes_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(answers, timeout=30, message="the sandbox command to listen")
    return process


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("kept", [True, False], ids=["passes-file", "in-memory"])
def test_passes_survive_a_restart_only_with_a_passes_file(tmp_path, settings, kept):
    port = free_port()
    passes_file = tmp_path / "var" / "sandbox-passes.jsonl" if kept else None
    settings.SMARTPAGES_API_URL = f"http://127.0.0.1:{port}"
    settings.SMARTPAGES_KEY_ID, settings.SMARTPAGES_KEY_TOKEN = SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN
    process = _start_sandbox(port, passes_file)
    try:
        assert sync.template_refresh(template_id=DEMO_TEMPLATE_ID).status == "succeeded"
        template = PassTemplate.objects.get(pk=DEMO_TEMPLATE_ID)
        member = issuing.member_issue(
            template=template,
            values={"name": "Minni Minnugur", "email": "minni@example.is"},
            external_id="minni@example.is",
            source="manual",
        ).member
        assert member.status == Member.Status.ISSUED
    finally:
        stop_process(process)
    time.sleep(0.2)
    process = _start_sandbox(port, passes_file)
    try:
        if kept:
            refreshed = passes.member_refresh(member=member)
            assert refreshed.status == Member.Status.ISSUED and refreshed.refreshed_at is not None
            # The External ID is remembered too: the same holder cannot get a second pass upstream.
            again = issuing.member_issue(
                template=template,
                values={"name": "Minni Aftur", "email": "minni2@example.is"},
                external_id="other@example.is",
                source="manual",
            ).member
            assert again.status == Member.Status.ISSUED
        else:
            with pytest.raises(passes.MemberError, match="did not return this pass"):
                passes.member_refresh(member=member)
    finally:
        stop_process(process)
    if kept:
        lines = passes_file.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2 and '"externalIdentifier": "minni@example.is"' in lines[0]
