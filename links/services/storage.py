"""Writing a batch's files to the media storage so that a failed write leaves nothing behind.

A disk that fills up part of the way through a file (or a connection to the bucket that breaks) would leave a
partial file under the name: it is removed before the error goes on, so nobody downloads half a result and no
space stays taken by it. The caller turns the error into a sentence (background.failures).
"""

from __future__ import annotations

import logging

from django.core.files import File
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)


def store(name: str, content: File) -> str:
    """Save `content` under `name` (or the free name next to it); on any error remove what was written."""
    name = default_storage.get_available_name(name)
    try:
        return default_storage.save(name, content)
    except BaseException:
        remove_quietly(name)
        raise


def remove_quietly(name: str) -> None:
    try:
        default_storage.delete(name)
    except Exception:  # noqa: BLE001 - the first error is the one to report; this one only goes to the log
        logger.warning("Could not remove the partial file %s", name, exc_info=True)
