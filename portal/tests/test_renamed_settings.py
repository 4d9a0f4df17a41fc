"""RUN_HEARTBEAT_SECONDS / RUN_STALE_SECONDS: one pair for every kind of background work; the old LINKS_* and
TEMPLATE_SYNC_* names are still read for one release, with a DeprecationWarning that names the new one."""

import warnings

import pytest

from portal.renamed_settings import seconds_setting

OLD = ("LINKS_STALE_SECONDS", "TEMPLATE_SYNC_STALE_SECONDS")


def test_the_new_name_wins_and_warns_of_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            seconds_setting(
                "RUN_STALE_SECONDS",
                old_names=OLD,
                default=15,
                environ={"RUN_STALE_SECONDS": "12", "LINKS_STALE_SECONDS": "120"},
            )
            == 12.0
        )
        assert seconds_setting("RUN_STALE_SECONDS", old_names=OLD, default=15, environ={}) == 15.0


@pytest.mark.parametrize("old", OLD)
def test_an_old_name_is_still_read_with_a_deprecation_warning(old):
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated .* set RUN_STALE_SECONDS instead"):
        assert seconds_setting("RUN_STALE_SECONDS", old_names=OLD, default=15, environ={old: "20"}) == 20.0


def test_the_defaults_take_a_dead_worker_over_within_thirty_seconds():
    from django.conf import settings as live

    # A few seconds between beats; stale after at most 30 s; swept every 10 s.
    assert 1 <= live.RUN_HEARTBEAT_SECONDS <= 5
    assert live.RUN_HEARTBEAT_SECONDS * 2 <= live.RUN_STALE_SECONDS <= 30
    assert live.SWEEP_INTERVAL == 10
    assert live.RUN_STALE_SECONDS + live.SWEEP_INTERVAL <= 30
    for old in (
        "LINKS_HEARTBEAT_SECONDS",
        "LINKS_STALE_SECONDS",
        "TEMPLATE_SYNC_HEARTBEAT_SECONDS",
        "TEMPLATE_SYNC_STALE_SECONDS",
    ):
        assert not hasattr(live, old)  # nothing reads the old names but the settings themselves
