"""Rate limits count per client even behind the proxy production runs behind."""

import pytest
from django.core.cache import cache
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def _failed_logins(client, count, **headers):
    return [
        client.post(reverse("login"), {"username": f"u{n}", "password": "x"}, **headers).status_code
        for n in range(count)
    ]


def test_behind_a_proxy_each_client_has_its_own_login_budget(client, settings):
    settings.AXES_FAILURE_LIMIT, settings.CLIENT_IP_HEADER = 3, "X-Forwarded-For"
    assert _failed_logins(client, 4, HTTP_X_FORWARDED_FOR="spoofed, 203.0.113.7") == [200, 200, 429, 429]
    # Another holder behind the same proxy (same REMOTE_ADDR) is not throttled by the first one's tries,
    # and only the address the proxy appended counts: a forged first entry changes nothing.
    assert _failed_logins(client, 1, HTTP_X_FORWARDED_FOR="203.0.113.7, 198.51.100.2") == [200]
    assert _failed_logins(client, 1, HTTP_X_FORWARDED_FOR="other, 203.0.113.7") == [429]


def test_without_a_proxy_header_setting_the_socket_address_counts(client, settings):
    settings.AXES_FAILURE_LIMIT, settings.CLIENT_IP_HEADER = 3, ""
    assert _failed_logins(client, 3, HTTP_X_FORWARDED_FOR="203.0.113.7") == [200, 200, 429]
    assert _failed_logins(client, 1, HTTP_X_FORWARDED_FOR="198.51.100.2") == [429]  # header ignored
