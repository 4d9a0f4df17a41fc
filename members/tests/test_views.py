"""Staff pages: member list search, filters and pagination, CSV export, detail, add and void."""

import csv
import html
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import Member
from members.services import autofill, counts, issuing
from sandbox import DEMO_TEMPLATE_ID

from .factories import make_member, mirror_template

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(club):
    return {
        "laura": make_member(
            club,
            name="Laura Loopy",
            email="laura.loopy@example.com",
            phone="+3545551234",
            external_id="laura.loopy@example.com",
        ),
        "percy": make_member(club, name="Percy PassKit", email="percy@example.com", phone="+3546612345"),
        "jon": make_member(club, name="Jón Þórsson", email="jon@example.is", status=Member.Status.FAILED),
    }


def listed(client, **query) -> list[int]:
    response = client.get(reverse("members:member_list"), query)
    assert response.status_code == 200
    return [member.pk for member in response.context["page"]]


@pytest.mark.parametrize(
    "typed",
    [
        "Laura.Loopy@Example.COM ",
        "555 1234",
        "+354 555-1234",
        "003545551234",
        "laura.loopy@example.com",
        "loop",
        "LOOPY",
    ],
)
def test_search_finds_a_member_by_email_phone_or_name_however_it_is_typed(client, viewer, people, typed):
    client.force_login(viewer)
    assert listed(client, q=typed) == [people["laura"].pk]


def test_search_by_pass_id_and_external_id_is_exact(client, viewer, people):
    client.force_login(viewer)
    assert listed(client, q=str(people["percy"].pass_id).upper()) == [people["percy"].pk]
    assert listed(client, q="laura.loopy@example.com") == [people["laura"].pk]
    assert listed(client, q="LAURA.LOOPY@EXAMPLE.COM") == [people["laura"].pk]  # External ID in any case


def test_filters_and_sorting(client, viewer, people, sandbox):
    other = mirror_template(sandbox.template_ids()[1])
    elsewhere = make_member(other, name="Anna", source=Member.Source.MANUAL)
    Member.objects.filter(pk=people["jon"].pk).update(created_at=timezone.now() - timedelta(days=10))
    client.force_login(viewer)
    laura, percy, jon = people["laura"].pk, people["percy"].pk, people["jon"].pk

    assert listed(client, template=DEMO_TEMPLATE_ID) == [percy, laura, jon]
    assert listed(client, status="failed") == [jon]
    assert listed(client, source="manual") == [elsewhere.pk]
    assert listed(client, has_external_id="yes") == [laura]
    assert set(listed(client, has_external_id="no")) == {percy, jon, elsewhere.pk}
    recent = (timezone.localdate() - timedelta(days=1)).isoformat()
    assert jon not in listed(client, created_from=recent)
    assert listed(client, created_to=(timezone.localdate() - timedelta(days=5)).isoformat()) == [jon]
    assert listed(client, sort="name") == [elsewhere.pk, jon, laura, percy]
    assert listed(client, template="not-a-uuid") == []


def test_pagination_reads_one_page_without_counting_and_queries_stay_flat(client, viewer, club):
    for n in range(60):
        make_member(club, name=f"Member {n:02d}")
    client.force_login(viewer)
    with CaptureQueriesContext(connection) as first:
        page1 = client.get(reverse("members:member_list"))
    page2 = client.get(reverse("members:member_list"), {"page": 2})
    assert len(page1.context["page"].object_list) == 50 and page1.context["page"].has_next()
    assert len(page2.context["page"].object_list) == 10 and not page2.context["page"].has_next()
    assert 'rel="next"' in page1.content.decode() and 'rel="prev"' in page2.content.decode()
    assert not any(
        "COUNT(" in q["sql"].upper() and "members_member" in q["sql"] and "status" not in q["sql"]
        for q in first.captured_queries
    )
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("members:member_list"), {"q": "Member 01"})
    assert len(small.captured_queries) == len(first.captured_queries)


def test_export_streams_the_filtered_list_as_formula_safe_utf8_with_bom(client, viewer, people, club):
    make_member(club, name='=HYPERLINK("http://evil")', email="evil@example.com")
    make_member(club, name="-2+3", email="minus@example.com")
    client.force_login(viewer)

    response = client.get(reverse("members:member_export"), {"template": DEMO_TEMPLATE_ID, "sort": "name"})

    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:5] == ["Name", "Email", "Phone", "External ID", "Pass ID"]
    names = [row[0] for row in rows[1:]]
    assert names == ["'-2+3", '\'=HYPERLINK("http://evil")', "Jón Þórsson", "Laura Loopy", "Percy PassKit"]
    laura = next(row for row in rows if row[0] == "Laura Loopy")
    assert laura[3:5] == ["laura.loopy@example.com", str(people["laura"].pass_id)]

    only_failed = b"".join(client.get(reverse("members:member_export"), {"status": "failed"}).streaming_content)
    assert [row[0] for row in csv.reader(io.StringIO(only_failed.decode("utf-8-sig")))][1:] == ["Jón Þórsson"]


def test_export_keeps_e164_phones_as_numbers_and_defuses_formulas(client, viewer, club):
    make_member(club, name="=1+1", email="formula@example.com", phone="+3545551234")
    make_member(club, name="-12", email="minus@example.com", phone="+3546612345")
    client.force_login(viewer)

    body = b"".join(client.get(reverse("members:member_export"), {"sort": "name"}).streaming_content)

    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    # The same rule as the link results: a lone number (a phone in E.164) is data, anything else starting
    # with = + - @ is shown as text.
    assert [row[:3] for row in rows[1:]] == [
        ["-12", "minus@example.com", "+3546612345"],
        ["'=1+1", "formula@example.com", "+3545551234"],
    ]


def test_detail_shows_values_by_label_and_the_status_history(client, viewer, club, manager):
    member = issuing.member_issue(
        template=club,
        values={"name": "Laura Loopy", "email": "laura@example.com"},
        external_id="laura@example.com",
        source="link",
        source_batch_id=4,
        source_row=9,
    ).member
    client.force_login(viewer)
    text = client.get(reverse("members:member_detail", args=[member.pk])).content.decode()
    assert "Nafn / Name</dt><dd>Laura Loopy" in text and "Netfang / Email</dt><dd>laura@example.com" in text
    # The source batch and row, linked to the batch page.
    assert (
        str(member.pass_id) in text
        and f'batch <a href="{reverse("links:batch_detail", args=[4])}">#4</a>, row 9' in text
    )
    assert "Pass created on SmartPages." in text
    assert "member_void" not in text and "/void/" not in text  # viewers see no manager buttons
    # SmartPages' last reply as the JSON it was (null, true, "…"), not Python's repr of it.
    member.upstream = {"id": str(member.pass_id), "expiryDate": None, "isVoided": False, "note": "<b>hi</b>"}
    member.save(update_fields=["upstream"])
    text = client.get(reverse("members:member_detail", args=[member.pk])).content.decode()
    reply = text.split("Last reply from SmartPages")[1]
    assert "&lt;b&gt;hi&lt;/b&gt;" in reply and "<b>" not in reply  # escaped like any upstream text
    assert '"expiryDate": null' in html.unescape(reply) and '"isVoided": false' in html.unescape(reply)
    assert "None" not in reply


def test_a_manager_adds_a_member_and_autofill_stops_a_duplicate(client, manager, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email")
    client.force_login(manager)
    url = reverse("members:member_add", args=[club.pk])

    response = client.post(
        url, {"field_name": "Laura", "field_email": "Laura@Example.com", "field_phone": ""}, follow=True
    )
    member = Member.objects.get()
    assert member.external_id == "laura@example.com" and member.status == "issued" and member.source == "manual"
    assert member.created_by == manager and "Member added and pass issued." in response.content.decode()

    again = client.post(url, {"field_name": "Laura L", "field_email": " laura@example.com"}, follow=True)
    assert Member.objects.count() == 1 and len(sandbox.passes(DEMO_TEMPLATE_ID)) == 1
    assert "already exists on this template; no new pass was made" in again.content.decode()
    assert again.redirect_chain[-1][0] == reverse("members:member_detail", args=[member.pk])


def test_add_member_shows_format_errors_by_field(client, manager, club):
    client.force_login(manager)
    page = client.post(
        reverse("members:member_add", args=[club.pk]),
        {"field_name": "Laura", "field_email": "laura@", "field_phone": "12"},
    )
    form = page.context["form"]
    assert "not a valid email address" in form.errors["field_email"][0]
    assert "too short" in form.errors["field_phone"][0] or "not a valid phone" in form.errors["field_phone"][0]
    assert Member.objects.count() == 0


def test_add_member_refuses_a_bad_optional_phone_that_a_csv_row_would_only_leave_out(client, manager, club):
    # A person typing can correct the number; only uploaded rows get the forgiving default.
    client.force_login(manager)
    page = client.post(
        reverse("members:member_add", args=[club.pk]),
        {"field_name": "Laura", "field_email": "laura@example.com", "field_phone": "600 5729"},
    )
    assert page.context["form"].errors["field_phone"] == [
        "Símanúmer / Phone: “600 5729” is not a valid phone number. It is not an assigned Icelandic number."
    ]
    assert Member.objects.count() == 0


def test_void_from_the_detail_page(client, manager, club, sandbox):
    member = issuing.member_issue(
        template=club, values={"name": "Laura", "email": "l@example.com"}, external_id=None, source="manual"
    ).member
    client.force_login(manager)
    response = client.post(reverse("members:member_void", args=[member.pk]), follow=True)
    assert "The pass is voided." in response.content.decode()
    member.refresh_from_db()
    assert member.status == "voided" and sandbox.passes(DEMO_TEMPLATE_ID)[0]["isVoided"] is True


def test_viewers_cannot_add_void_or_refresh(client, viewer, club):
    member = make_member(club)
    client.force_login(viewer)
    assert client.get(reverse("members:member_add", args=[club.pk])).status_code == 403
    assert client.post(reverse("members:member_add", args=[club.pk]), {"field_name": "x"}).status_code == 403
    assert client.post(reverse("members:member_void", args=[member.pk])).status_code == 403
    assert client.post(reverse("members:member_refresh", args=[member.pk])).status_code == 403
    member.refresh_from_db()
    assert member.status == "issued"


def test_pages_need_a_login(client, club):
    for url in (
        reverse("members:member_list"),
        reverse("members:member_export"),
        reverse("members:autofill_settings", args=[club.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_template_pages_and_dashboard_show_members(client, manager, people, club):
    # The factory writes members directly, as an import would: the reconcile sets the kept counts.
    assert counts.template_member_counts_reconcile() == 1
    autofill.autofill_setting_change(template=club, source="phone")
    client.force_login(manager)
    detail = client.get(reverse("template_detail", args=[club.pk])).content.decode()
    assert 'id="members-panel"' in detail and "<dt>Members</dt><dd>3" in detail and "1 failed" in detail
    assert "Phone number</a> (field <code>phone</code>)" in detail
    assert reverse("members:autofill_settings", args=[club.pk]) in detail

    templates = client.get(reverse("template_list"))
    counted = {t.pk: t.member_count for t in templates.context["page"]}
    assert counted[club.pk] == 3

    dashboard = client.get(reverse("dashboard")).content.decode()
    assert '<span class="stat-value">3</span><span class="stat-label">members</span>' in dashboard
    assert ">Members</a>" in dashboard  # the nav link appears once members:member_list exists
