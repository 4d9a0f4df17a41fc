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


def test_a_refused_csrf_token_gets_a_page_a_holder_understands_in_icelandic_too():
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(reverse("login"), {"username": "x", "password": "y"}, HTTP_ACCEPT_LANGUAGE="is")
    assert response.status_code == 403
    assert "Vinsamlegast reyndu aftur" in response.content.decode()
    english = strict.post(reverse("login"), {"username": "x", "password": "y"}, HTTP_ACCEPT_LANGUAGE="en")
    assert "Go back, reload the page and send it again." in english.content.decode()


def test_a_chart_of_one_says_it_in_the_singular_and_its_last_label_ends_inside_it():
    """Found by a walk through `make run`: "1 claims in all", and the last day's label ran past the chart's right
    edge on a phone (it was centred on the last bar)."""
    from datetime import date

    from django.template.loader import render_to_string

    from portal.templatetags.charts import bar_chart_for

    days = [(date(2026, 12, day), 1 if day == 4 else 0) for day in range(1, 5)]
    chart = bar_chart_for(days, chart_id="c", title="Claims", unit="claims", label_name="Day")
    html = render_to_string("portal/_bar_chart.html", {"chart": chart})

    assert "1 claim in all" in html
    ticks = [line for line in html.split("<text ")[1:]]
    assert 'text-anchor="end"' in ticks[-1] and all('text-anchor="middle"' in tick for tick in ticks[:-1])
    two = bar_chart_for([(date(2026, 12, 4), 2)], chart_id="c", title="Members", unit="members", label_name="Day")
    assert "2 members in all" in render_to_string("portal/_bar_chart.html", {"chart": two})
