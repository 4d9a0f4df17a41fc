"""Fixtures the members tests share: the sandbox's club card, mirrored."""

import pytest

from .factories import mirror_template


@pytest.fixture
def club(db, sandbox):
    """The sandbox's demo template in the mirror, as a sync would have stored it."""
    return mirror_template()
