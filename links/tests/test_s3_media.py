"""Web and worker on different hosts share no disk: with MEDIA_S3_BUCKET set, an upload made through the web
side is processed by a Celery worker that has a different MEDIA_ROOT, and the links file comes back through
the permission-checked download view, all through a real S3-compatible server (moto's, over HTTP)."""

import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.urls import reverse

from conftest import ROOT, production_env, start_celery, stop_process, wait_for
from links.keyring import link_keys
from links.models import LinkBatch
from links.tokens import decode

from .factories import demo_template

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _storage_settings(env: dict[str, str]) -> dict:
    """settings.STORAGES["default"] as portal/settings.py builds it from this environment."""
    script = "import django, json; django.setup(); from django.conf import settings; print(json.dumps(settings.STORAGES['default']))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=production_env(env), capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def _files_under(folder: str) -> list[Path]:
    return [path for path in Path(folder).rglob("*") if path.is_file()]


def test_a_batch_uploaded_on_web_is_processed_by_a_worker_elsewhere_and_downloaded(
    client, live_sandbox, manager, media_bucket, settings
):
    storage = _storage_settings(media_bucket.env)
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert storage["OPTIONS"]["bucket_name"] == media_bucket.env["MEDIA_S3_BUCKET"]
    web_media, worker_media = tempfile.mkdtemp(prefix="web-media-"), tempfile.mkdtemp(prefix="worker-media-")
    settings.STORAGES = {**settings.STORAGES, "default": storage}
    settings.MEDIA_ROOT = web_media
    worker = start_celery(
        {
            **media_bucket.env,
            "MEDIA_ROOT": worker_media,
            "SMARTPAGES_API_URL": live_sandbox.url,
            "SMARTPAGES_KEY_ID": "sandbox",
            "SMARTPAGES_KEY_TOKEN": "sandbox-secret",
        },
        log_name="s3-worker",
    )
    try:
        template = demo_template()
        client.force_login(manager)
        campaign = "name,email,phone\n" + "".join(
            f"Félagi {n},felagi{n}@example.is,+354 82{n:05d}\n" for n in range(1, 301)
        )
        upload = io.BytesIO(campaign.encode())
        upload.name = "haust.csv"
        response = client.post(reverse("links:upload", args=[template.pk]), {"file": upload, "delimiter": ""})
        batch = LinkBatch.objects.get()
        assert response["Location"] == reverse("links:batch_detail", args=[batch.pk])
        assert batch.input_file.name in media_bucket.object_keys()

        mapping = {f"col_{index}": column for index, column in enumerate(batch.header)}  # name, email, phone
        client.post(reverse("links:batch_confirm", args=[batch.pk]), mapping)
        wait_for(lambda: LinkBatch.objects.get(pk=batch.pk).is_finished, timeout=60, message="the batch to finish")
        batch.refresh_from_db()
        assert batch.status == "succeeded", batch.error

        download = client.get(reverse("links:batch_download", args=[batch.pk, "output"]))
        assert download["Content-Disposition"] == 'attachment; filename="haust-links.csv"'
        rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig"))))
    finally:
        stop_process(worker)
    assert rows[0] == ["name", "email", "phone", "smartpass_link", "error"] and len(rows) == 301
    payload = decode(rows[150][3].rsplit("/", 1)[1], link_keys())
    assert (payload.batch_id, payload.row, payload.fields["email"]) == (batch.pk, 150, "felagi150@example.is")
    assert batch.output_file.name in media_bucket.object_keys()
    # Neither side wrote to its own disk: everything went through the bucket.
    assert _files_under(web_media) == [] and _files_under(worker_media) == []
