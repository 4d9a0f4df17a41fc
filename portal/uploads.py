"""Where Django keeps an upload while its request is read, and who cleans that place.

An upload larger than FILE_UPLOAD_MAX_MEMORY_SIZE goes to a temporary file until the view has stored it (a
campaign CSV: holder names, emails, phone numbers). Django deletes the file when the request ends; a web
process killed in the middle of an upload cannot, and the file would stay for good in /tmp. So those files go
to a folder of the portal's own (FILE_UPLOAD_TEMP_DIR, var/uploads by default), and the web process itself
removes files older than an hour from it: at each upload (at most every few minutes per process) and every ten
minutes from gunicorn's master (deploy/gunicorn.conf.py). Web and workers may be on different hosts: only the web
process ever writes here, so only it cleans.

Plain Python below Django's handler, so that gunicorn's master can use it before (without) Django.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from django.core.files.uploadhandler import TemporaryFileUploadHandler

logger = logging.getLogger(__name__)

MAX_AGE_SECONDS = 3600
CLEAN_EVERY_SECONDS = 300
_last_clean = 0.0
_clean_lock = threading.Lock()


def upload_temp_dir_clean(folder: str | os.PathLike, *, max_age: float = MAX_AGE_SECONDS) -> int:
    """Remove the files in `folder` last written more than `max_age` seconds ago; returns how many. An upload in
    progress writes its file continuously, so it is never that old."""
    cutoff = time.time() - max_age
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # its request ended meanwhile and Django removed it
    if removed:
        logger.info("Removed %d upload temporary file(s) older than %d s from %s", removed, max_age, folder)
    return removed


def clean_now_and_then(folder: str | os.PathLike) -> None:
    """upload_temp_dir_clean at most every CLEAN_EVERY_SECONDS in this process."""
    global _last_clean
    now = time.monotonic()
    with _clean_lock:
        if _last_clean and now - _last_clean < CLEAN_EVERY_SECONDS:
            return
        _last_clean = now
    try:
        upload_temp_dir_clean(folder)
    except OSError:
        logger.warning("Could not clean the upload temporary folder %s", folder, exc_info=True)


class CleaningTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's handler, writing to FILE_UPLOAD_TEMP_DIR (made if missing), which it cleans now and then."""

    def new_file(self, *args, **kwargs) -> None:
        from django.conf import settings

        folder = Path(settings.FILE_UPLOAD_TEMP_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        clean_now_and_then(folder)
        super().new_file(*args, **kwargs)
