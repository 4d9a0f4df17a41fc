"""A full media storage: the upload and the run say so in words staff can act on, and leave no partial file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from background.failures import STORAGE_FULL
from links import services
from links.models import LinkBatch, LinkChunk

from .factories import demo_template, upload
from .full_media import files_under, full_media

pytestmark = pytest.mark.django_db(transaction=True)


def _campaign(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "phone"])
        for number in range(1, rows + 1):
            writer.writerow([f"felagi{number}@example.is", f"Félagi Númer {number}", f"+354 {8200000 + number}"])
    return path


def test_an_upload_to_a_full_storage_is_refused_with_the_reason_and_leaves_no_partial_file(sandbox, settings, tmp_path):
    template = demo_template()
    source = _campaign(tmp_path / "campaign.csv", 8000)  # about 400 KB
    media = tmp_path / "media"
    with full_media(settings, media, size_kb=128):
        with pytest.raises(services.LinkUploadError) as refused:
            upload(template, source)
        left = files_under(media)
    assert str(refused.value) == services.STORAGE_FULL_UPLOAD
    assert "media storage is full" in str(refused.value)
    assert left == {}  # the part of input.csv that was written is gone
    assert not LinkBatch.objects.exists()


def test_a_run_that_fills_the_storage_fails_with_the_reason_and_leaves_no_partial_file(sandbox, settings, tmp_path):
    template = demo_template()
    source = _campaign(tmp_path / "campaign.csv", 3000)  # ~150 KB in, several times that out (the links)
    settings.LINKS_CHUNK_ROWS = 500
    media = tmp_path / "media"
    with full_media(settings, media, size_kb=400) as kind:
        batch = upload(template, source)
        services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
        batch = services.link_batch_process(batch_id=batch.pk, jobs=1)
        left = files_under(media)
    assert (batch.status, batch.error) == ("failed", STORAGE_FULL), kind
    # What is left is the input and the chunks made in full before the disk filled; no file is cut short.
    done = LinkChunk.objects.filter(batch=batch, status="done")
    kept = {batch.input_file.name} | {name for chunk in done for name in (chunk.output_file, chunk.errors_file)}
    assert set(left) == kept
    assert left[batch.input_file.name] == source.stat().st_size
    assert not any("output" in name for name in left)


def test_a_disk_that_fills_while_the_result_is_put_together_leaves_no_partial_result(sandbox, settings, tmp_path):
    # Room for the input and every chunk's rows, not for the result as well: the assembly (which puts the result
    # together beside the chunks on a local disk) fails with the reason, and leaves no part of a result behind.
    template = demo_template()
    source = _campaign(tmp_path / "campaign.csv", 3000)
    settings.LINKS_CHUNK_ROWS = 500
    settings.MEDIA_ROOT = str(tmp_path / "roomy")
    batch = upload(template, source)
    services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
    made = services.link_batch_process(batch_id=batch.pk, jobs=1)
    result_size = files_under(tmp_path / "roomy")[made.output_file.name]
    media = tmp_path / "media"
    with full_media(settings, media, size_kb=(source.stat().st_size + result_size * 3 // 2) // 1024) as kind:
        batch = upload(template, source)
        services.link_batch_confirm(batch=batch, mapping=batch.mapping, enqueue=False)
        batch = services.link_batch_process(batch_id=batch.pk, jobs=1)
        left = files_under(media)
    assert (batch.status, batch.error) == ("failed", STORAGE_FULL), kind
    assert LinkChunk.objects.filter(batch=batch, status="done").count() == 6  # every chunk was made
    assert not any("output" in name or "assembling" in name for name in left), left
