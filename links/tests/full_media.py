"""A media storage that fills up: a small tmpfs mounted for the test where the machine allows it (root), else a
FileSystemStorage that refuses to write past a byte budget with the same OSError (ENOSPC) a full disk gives."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage


class BudgetStorage(FileSystemStorage):
    """Writes at most `budget` bytes in all, then fails the write in progress with ENOSPC (part of it written,
    as a real disk leaves it)."""

    budget = 0

    def _save(self, name, content):
        storage = self

        class Filling(File):
            def chunks(self, chunk_size=None) -> Iterator[bytes]:
                for piece in content.chunks(chunk_size):
                    if len(piece) > storage.budget:
                        yield piece[: storage.budget]
                        storage.budget = 0
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    storage.budget -= len(piece)
                    yield piece

        return super()._save(name, Filling(content.file, name=content.name))


@contextmanager
def full_media(settings, folder: Path, *, size_kb: int) -> Iterator[str]:
    """MEDIA_ROOT on a filesystem of `size_kb`; yields what it is ("tmpfs" or "budget")."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    settings.MEDIA_ROOT = str(folder)
    if not mounted:
        BudgetStorage.budget = size_kb * 1024
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {"BACKEND": "links.tests.full_media.BudgetStorage", "OPTIONS": {"location": str(folder)}},
        }
    try:
        yield "tmpfs" if mounted else "budget"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def files_under(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_size for path in folder.rglob("*") if path.is_file()}
