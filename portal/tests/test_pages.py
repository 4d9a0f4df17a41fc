"""Staff pages render what a person expects, including the edges (unknown addresses)."""
import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_an_unknown_address_gives_the_not_found_page_to_a_logged_in_person(client, viewer):
    client.force_login(viewer)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "There is nothing at this address." in body
    assert 'aria-current="page"' not in body  # no navigation item claims the page


def test_the_navigation_marks_the_section_of_the_page(client, viewer):
    client.force_login(viewer)
    body = client.get(reverse("template_list")).content.decode()
    assert '<a href="/templates/" aria-current="page">Templates</a>' in body
    for label, url in (("Members", reverse("members:member_list")), ("Links", reverse("links:batch_list"))):
        assert f'<a href="{url}" >{label}</a>' in body
