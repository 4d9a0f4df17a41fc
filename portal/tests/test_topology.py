"""The production topology in one test, driven as people use it.

Separate processes as production runs them: gunicorn with the production config and settings (DEBUG off, TLS,
secure cookies, the Content-Security-Policy), a Celery worker and Celery beat, on PostgreSQL and Redis, with
media in an S3-compatible bucket (moto's server) and the SmartPages sandbox upstream; web and worker have
different MEDIA_ROOTs, so only the bucket connects them. Beat fills the template mirror; a manager made with
`create_staff` logs in, uploads a CSV in the page, confirms the mapping and downloads the links the worker
made; a holder opens one, claims, and sees the pass page with its Pass ID.
"""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conftest import (
    ARTIFACTS,
    ROOT,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_TOKEN,
    isolated_broker_env,
    production_env,
    second_factor_code,
    second_factor_device,
    start_celery,
    start_gunicorn,
    stop_process,
    tls_certificate,
)
from members.models import Member
from sandbox import DEMO_TEMPLATE_ID, SmartPagesSandbox

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
PASSWORD = "basalt columns at dawn"


def test_beat_fills_the_mirror_a_manager_makes_links_and_a_holder_claims_one(browser, media_bucket, tmp_path):
    upstream = SmartPagesSandbox(templates=25, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN).start()
    shared = {
        **media_bucket.env,
        **isolated_broker_env(),
        "SMARTPAGES_API_URL": upstream.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "TEMPLATE_SYNC_INTERVAL": "3",
    }
    certfile, keyfile = tls_certificate(tmp_path)
    web_env = production_env(shared)
    processes = []
    try:
        web, url, _ = start_gunicorn(
            web_env,
            log_name="topology-web",
            command=["gunicorn", "-c", "deploy/gunicorn.conf.py", "--certfile", certfile, "--keyfile", keyfile],
        )
        processes.append(web)
        url = url.replace("http://", "https://")
        # The worker and beat: production settings, their own MEDIA_ROOT (production_env makes a new one).
        # Beat and the operator's create_staff start while the worker boots (start_celery waits for it).
        backend_env = production_env({**shared, "PUBLIC_BASE_URL": url, "SECRET_KEY": web_env["SECRET_KEY"]})
        with open(ARTIFACTS / "topology-beat.log", "w") as beat_log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "portal",
                        "beat",
                        "--schedule",
                        str(tmp_path / "beat" / "schedule"),
                    ],
                    cwd=ROOT,
                    env=backend_env,
                    stdout=beat_log,
                    stderr=subprocess.STDOUT,
                )
            )
        create_staff = subprocess.Popen(
            [sys.executable, "manage.py", "create_staff", "maria", "--role", "manager", "--password-stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=web_env,
        )
        create_staff.stdin.write(PASSWORD + "\n")
        create_staff.stdin.close()
        processes.append(start_celery(backend_env, log_name="topology-worker"))
        assert create_staff.wait(timeout=60) == 0 and create_staff.stdout.read() == "Created maria as manager.\n"

        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        violations = []
        page = context.new_page()
        page.on(
            "console",
            lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
        )
        _manager_makes_links(page, url, tmp_path)
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Download links").click()
        with open(download_info.value.path(), encoding="utf-8-sig", newline="") as result:
            rows = list(csv.DictReader(result))
        assert len(rows) == 20 and all(row["error"] == "" for row in rows)
        assert all(row["smartpass_link"].startswith(f"{url}/p/") for row in rows)

        holder = browser.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844})
        phone = holder.new_page()
        phone.on(
            "console",
            lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
        )
        phone.goto(rows[6]["smartpass_link"])
        expect(phone.locator("dl.prefilled")).to_contain_text("Félagi 7")
        phone.click("button[type=submit].primary")
        expect(phone.locator("figure.qr svg")).to_be_visible()
        pass_id = phone.locator("#pass-id").inner_text()
        phone.screenshot(path=str(ARTIFACTS / "topology-pass.png"), full_page=True)
        member = Member.objects.get()
        assert (str(member.pass_id), member.display_name, member.status) == (pass_id, "Félagi 7", "issued")
        assert violations == []
        # Everything the batch wrote is in the bucket; web's own MEDIA_ROOT stayed empty.
        assert sum(key.startswith("links/") for key in media_bucket.object_keys()) >= 2
        assert not any(path.is_file() for path in Path(web_env["MEDIA_ROOT"]).rglob("*"))
        context.close()
        holder.close()
    finally:
        for process in reversed(processes):
            stop_process(process)
        upstream.stop()


def _manager_makes_links(page, url: str, tmp_path: Path) -> None:
    device = second_factor_device("maria")  # maria set up her authenticator app earlier
    page.goto(f"{url}/login/")
    page.fill("input[name=username]", "maria")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    # Production asks for the second factor (MFA_REQUIRED): the code of maria's authenticator app.
    page.wait_for_url(f"{url}/login/second-factor/?next=/")
    page.fill("input[name=code]", second_factor_code(device))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(f"{url}/")
    # Beat fills the mirror: the demo template appears on the templates page without anyone pressing Sync.
    page.goto(f"{url}/templates/")
    for _ in range(30):
        if page.locator(f"a[href='/templates/{DEMO_TEMPLATE_ID}/']").count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    page.locator(f"a[href='/templates/{DEMO_TEMPLATE_ID}/']").first.click()
    page.get_by_role("link", name="Generate links").click()
    campaign = tmp_path / "haustherferð.csv"
    campaign.write_text(
        "name,email,phone\n" + "".join(f"Félagi {n},felagi{n}@example.is,+354 82{n:05d}\n" for n in range(1, 21)),
        encoding="utf-8",
    )
    page.set_input_files("input[type=file]", str(campaign))
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("h1")).to_have_text("haustherferð.csv")
    page.get_by_role("button", name="Generate links").click()
    expect(page.get_by_role("link", name="Download links")).to_be_visible(timeout=30_000)
    expect(page.locator("[data-run-status] .badge")).to_have_text("succeeded")
    page.screenshot(path=str(ARTIFACTS / "topology-batch.png"), full_page=True)
