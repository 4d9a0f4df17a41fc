"""Upload temporary files live in the portal's own folder, which the web process cleans of files over an hour old
(a web worker killed mid-upload would otherwise leave holder data behind for good)."""

import os
import time

from django.conf import settings as live_settings

from portal import uploads


def _aged(path, seconds: float):
    path.write_text("name,email\nAnna,anna@example.is\n")
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_files_older_than_an_hour_go_and_younger_ones_stay(tmp_path):
    old = _aged(tmp_path / "tmpab12.upload.csv", 3601)
    young = _aged(tmp_path / "tmpcd34.upload.csv", 3000)
    assert uploads.upload_temp_dir_clean(tmp_path) == 1
    assert not old.exists() and young.exists()
    assert uploads.upload_temp_dir_clean(tmp_path / "missing") == 0


def test_an_upload_waits_in_the_portals_folder_and_cleans_it_now_and_then(settings, tmp_path, monkeypatch):
    assert "portal.uploads.CleaningTemporaryFileUploadHandler" in live_settings.FILE_UPLOAD_HANDLERS
    folder = tmp_path / "uploads"
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    monkeypatch.setattr(uploads, "_last_clean", 0.0)
    folder.mkdir()
    left_behind = _aged(folder / "tmpkilled.upload.csv", 7200)  # a worker killed mid-upload two hours ago

    handler = uploads.CleaningTemporaryFileUploadHandler()
    handler.new_file("file", "campaign.csv", "text/csv", 10_000_000)
    handler.receive_data_chunk(b"name,email\n", 0)
    uploaded = handler.file_complete(11)

    assert os.path.dirname(uploaded.temporary_file_path()) == str(folder)
    assert not left_behind.exists()
    # The next upload soon after does not scan the folder again.
    again = _aged(folder / "tmpkilled2.upload.csv", 7200)
    handler.new_file("file", "campaign2.csv", "text/csv", 10_000_000)
    assert again.exists()
    uploaded.close()
