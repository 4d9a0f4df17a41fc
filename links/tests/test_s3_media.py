"""Web and worker on different hosts share no disk: with MEDIA_S3_BUCKET set, a CSV uploaded to web (gunicorn
with production settings) is processed by a Celery worker that has a different MEDIA_ROOT, and the links file
comes back through the permission-checked download view, all through a real S3-compatible server (moto's,
over HTTP)."""

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import (
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
    wait_for,
)
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode

from .factories import demo_template

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.django_db(transaction=True)]
PASSWORD = "basalt columns at dawn"


class Browserless:
    """A logged-in staff session over HTTPS, posting forms with their CSRF token as a browser does."""

    def __init__(self, url: str, certfile: str):
        # verify on each request: a session's own is overridden by REQUESTS_CA_BUNDLE when that is set
        self.url, self.session, self.certfile = url, requests.Session(), certfile

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, verify=self.certfile, allow_redirects=False, timeout=60)

    def post(self, path: str, data: dict, files: dict | None = None) -> requests.Response:
        # Over HTTPS the production settings name the cookie with the __Host- prefix.
        if "__Host-csrftoken" not in self.session.cookies:
            self.get(path).raise_for_status()  # the first form page sets the CSRF cookie, as in a browser
        data = {**data, "csrfmiddlewaretoken": self.session.cookies["__Host-csrftoken"]}
        headers = {"Referer": self.url + path}
        return self.session.post(
            self.url + path,
            data=data,
            files=files,
            headers=headers,
            verify=self.certfile,
            allow_redirects=False,
            timeout=60,
        )


def _files_under(folder: str) -> list[Path]:
    return [path for path in Path(folder).rglob("*") if path.is_file()]


def test_a_batch_uploaded_on_web_is_processed_by_a_worker_elsewhere_and_downloaded(
    live_sandbox, media_bucket, tmp_path
):
    template = demo_template()
    shared = {**media_bucket.env, **isolated_broker_env()}
    web_env = production_env(shared)
    worker_env = production_env(
        {
            **shared,
            "SMARTPAGES_API_URL": live_sandbox.url,
            "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
            "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        }
    )
    assert web_env["MEDIA_ROOT"] != worker_env["MEDIA_ROOT"]
    # The account as an operator makes it: production's password hashers are not the test settings' fast one.
    subprocess.run(
        [sys.executable, "manage.py", "create_staff", "maria", "--role", "manager", "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        cwd=ROOT,
        env=web_env,
        check=True,
        capture_output=True,
    )
    device = second_factor_device("maria")
    certfile, keyfile = tls_certificate(tmp_path)
    command = ["gunicorn", "-c", "deploy/gunicorn.conf.py", "--certfile", certfile, "--keyfile", keyfile]
    web, url, _ = start_gunicorn(web_env, command=command, log_name="s3-web")
    worker = start_celery(worker_env, log_name="s3-worker")
    try:
        staff = Browserless(url.replace("http://", "https://"), certfile)
        login = staff.post("/login/", {"username": "maria", "password": PASSWORD})
        assert login.status_code == 302 and login.headers["Location"] == "/"
        # Production asks for the second factor (MFA_REQUIRED): the code of maria's authenticator.
        assert staff.get("/").headers["Location"] == "/login/second-factor/?next=/"
        verified = staff.post("/login/second-factor/", {"code": second_factor_code(device), "next": "/"})
        assert verified.status_code == 302 and verified.headers["Location"] == "/"

        campaign = "name,email,phone\n" + "".join(
            f"Félagi {n},felagi{n}@example.is,+354 82{n:05d}\n" for n in range(1, 301)
        )
        upload = staff.post(
            f"/links/template/{template.pk}/upload/",
            {"delimiter": ""},
            files={"file": ("haust.csv", campaign.encode(), "text/csv")},
        )
        batch = LinkBatch.objects.get()
        assert upload.status_code == 302 and upload.headers["Location"] == f"/links/{batch.pk}/"
        assert batch.input_file.name in media_bucket.object_keys()

        mapping = {f"col_{index}": column for index, column in enumerate(batch.header)}  # name, email, phone
        assert staff.post(f"/links/{batch.pk}/confirm/", mapping).status_code == 302
        wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=60, message="the batch to finish")
        batch.refresh_from_db()
        assert batch.status == "succeeded", batch.error

        download = staff.get(f"/links/{batch.pk}/download/output/")
        assert download.headers["Content-Disposition"] == 'attachment; filename="haust-links.csv"'
        assert re.search(r"\bno-store\b", download.headers["Cache-Control"])
        rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    finally:
        stop_process(worker)
        stop_process(web)
    assert rows[0] == ["name", "email", "phone", "smartpass_link", "error"] and len(rows) == 301
    payload = decode(rows[150][3].rsplit("/", 1)[1], link_keys())
    assert (payload.batch_id, payload.row, payload.fields["email"]) == (batch.pk, 150, "felagi150@example.is")
    assert batch.output_file.name in media_bucket.object_keys()
    # Neither side wrote to its own disk: everything went through the bucket.
    assert _files_under(web_env["MEDIA_ROOT"]) == [] and _files_under(worker_env["MEDIA_ROOT"]) == []
