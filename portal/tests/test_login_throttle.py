"""Login throttling (django-axes): failures only, per client address and per normalised user name, on the
portal's login and the admin's alike."""

import pytest
from django.core.cache import cache
from django.urls import reverse

pytestmark = pytest.mark.django_db

RIGHT, WRONG = "correct horse battery", "wrong"


@pytest.fixture(autouse=True)
def three_failures_allowed(settings):
    settings.AXES_FAILURE_LIMIT = 3
    cache.clear()
    yield
    cache.clear()


def _login(client, username, password, address="203.0.113.1", url=None):
    return client.post(url or reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_failed_logins_lock_the_name_out_even_for_the_right_password(client, manager):
    responses = [_login(client, "maria", WRONG) for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 429]
    assert "Please enter a correct username and password" in responses[0].content.decode()
    refused = _login(client, "maria", RIGHT, address="198.51.100.5")  # another address: the name is locked
    assert refused.status_code == 429
    assert "Too many login attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_correct_logins_never_count(client, manager):
    for _ in range(10):
        response = _login(client, "maria", RIGHT)
        assert response.status_code == 302 and response["Location"] == reverse("dashboard")
        client.post(reverse("logout"))
    assert _login(client, "maria", RIGHT).status_code == 302


@pytest.mark.parametrize("variant", [" maria", "MARIA", "ｍａｒｉａ", "Maria\t"])
def test_spelling_the_name_differently_does_not_buy_a_fresh_budget(client, manager, variant):
    # Each try from its own address, so only the per-name count can lock.
    assert _login(client, "maria", WRONG, "203.0.113.1").status_code == 200
    assert _login(client, variant, WRONG, "203.0.113.2").status_code == 200
    assert _login(client, variant.upper(), WRONG, "203.0.113.3").status_code == 429
    assert _login(client, "maria", RIGHT, "203.0.113.4").status_code == 429


def test_one_address_trying_many_names_is_locked_out(client, manager):
    statuses = [_login(client, f"guess{n}", WRONG).status_code for n in range(3)]
    assert statuses == [200, 200, 429]
    assert _login(client, "maria", RIGHT).status_code == 429
    assert _login(client, "maria", RIGHT, address="198.51.100.5").status_code == 302  # the name itself is fine


def test_the_admin_login_is_the_portals_login_and_shares_the_count(client, manager):
    # The admin's own login form is gone: it sends people to the portal's, with where they were going.
    response = client.get(reverse("admin:login") + "?next=/admin/")
    assert response.status_code == 302 and response["Location"] == reverse("login") + "?next=/admin/"
    assert client.post(reverse("admin:login"), {"username": "maria", "password": RIGHT})["Location"] == "/login/"
    assert "_auth_user_id" not in client.session
    assert _login(client, "maria", WRONG, "203.0.113.1").status_code == 200
    assert _login(client, "MARIA", WRONG, "203.0.113.2").status_code == 200
    locked = _login(client, "maria", WRONG, "203.0.113.3")  # third failure for the name
    assert locked.status_code == 429
    client.get(reverse("admin:login"))
    refused = _login(client, "maria", RIGHT, "203.0.113.4")
    assert refused.status_code == 429
    assert "Too many login attempts" in refused.content.decode()
