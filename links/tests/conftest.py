"""Fixtures the links page tests share: uploaded files in a temporary MEDIA_ROOT, the sandbox's club card."""

import pytest

from .factories import demo_template


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


@pytest.fixture
def demo(sandbox, media):
    return demo_template()
