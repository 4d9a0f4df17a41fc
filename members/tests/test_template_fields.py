"""Template fields SmartPages documents and the portal now honours (issue 22): `lockInputFields` refuses an
edit of values (voiding stays allowed), `isUnique` refuses a value another member of the template holds before
any upstream call (claims, "Add member", uploads, edits) while SmartPages' own refusal is still handled, a 409
says what clashed, `allowedEmailDomains` is read in any shape, and only ACTIVE templates issue. Against the
sandbox over HTTP, which refuses the same things."""

import csv
import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from links.tests.claim_factories import link_path, nonce_of
from members import services
from members.models import Member
from members.services import issuing, passes
from sandbox import DEMO_TEMPLATE_ID
from templates_sync.client import PermanentError, client_from_settings

from .factories import mirror_template

pytestmark = pytest.mark.django_db

LAURA = {"name": "Laura Loopy", "email": "laura@example.com", "phone": "555 1234"}
PERCY = {"name": "Percy PassKit", "email": "percy@passkit.com"}


def _club_with(sandbox, **changes):
    sandbox.update_template(DEMO_TEMPLATE_ID, **changes)
    return mirror_template()


def _unique_email_fields(sandbox) -> list[dict]:
    fields = sandbox.get_template(DEMO_TEMPLATE_ID)["inputFields"]
    return [dict(field, isUnique=field["identifier"] == "email") for field in fields]


def _issued(template, values, external_id=None) -> Member:
    member = issuing.member_issue(template=template, values=values, external_id=external_id, source="manual").member
    assert member.status == Member.Status.ISSUED, member.failure_reason
    return member


# --- lockInputFields ---------------------------------------------------------------------------------------
def test_locked_input_fields_refuse_an_edit_of_values_and_voiding_stays_allowed(sandbox, manager):
    club = _club_with(sandbox, lockInputFields=True)
    member = _issued(club, LAURA)
    puts = sandbox.request_count("PUT")
    with pytest.raises(services.MemberError, match="editing input values on passes is disabled"):
        passes.member_edit(member=member, values={**LAURA, "name": "Laura Þóra"}, external_id="", user=manager)
    assert sandbox.request_count("PUT") == puts  # refused before SmartPages was asked
    member.refresh_from_db()
    assert member.values["name"] == "Laura Loopy" and not member.changes.exists()

    # The sandbox refuses such a PUT itself (a portal that did not know would be told).
    with client_from_settings() as smartpages:
        with pytest.raises(PermanentError, match="editing input values on passes is disabled"):
            smartpages.update_pass(str(member.pass_id), {"inputFields": [{"identifier": "name", "value": "X"}]})
    passes.member_void(member=member, user=manager)
    assert Member.objects.get(pk=member.pk).status == Member.Status.VOIDED


def test_the_edit_page_says_why_locked_values_cannot_be_saved(sandbox, manager, client):
    club = _club_with(sandbox, lockInputFields=True)
    member = _issued(club, LAURA)
    client.force_login(manager)
    response = client.post(
        reverse("members:member_edit", args=[member.pk]),
        {"field_name": "Laura B.", "field_email": LAURA["email"], "field_phone": LAURA["phone"], "external_id": ""},
    )
    assert "editing input values on passes is disabled" in response.content.decode()
    assert Member.objects.get(pk=member.pk).values["name"] == "Laura Loopy"


# --- isUnique ----------------------------------------------------------------------------------------------
def test_a_unique_value_held_by_another_member_is_refused_before_any_upstream_call(sandbox, manager):
    club = _club_with(sandbox, inputFields=_unique_email_fields(sandbox))
    _issued(club, LAURA)
    percy = _issued(club, PERCY)
    posts, puts = sandbox.request_count("POST"), sandbox.request_count("PUT")

    with pytest.raises(services.InvalidMemberValues) as refused:  # "Add member" and claims go this way
        issuing.member_issue(template=club, values={**LAURA, "name": "Other Laura"}, external_id=None, source="manual")
    assert refused.value.errors == {
        "email": "Netfang / Email: “laura@example.com” is already held by another member of this template, and "
        "the field is unique on SmartPages."
    }
    with pytest.raises(services.InvalidMemberValues, match="already held by another member"):
        passes.member_edit(member=percy, values={**PERCY, "email": LAURA["email"]}, external_id="", user=manager)
    assert (sandbox.request_count("POST"), sandbox.request_count("PUT")) == (posts, puts)
    assert Member.objects.count() == 2

    # Percy keeps his own value: editing his name is not a clash with himself.
    passes.member_edit(member=percy, values={**PERCY, "name": "Percy P."}, external_id="", user=manager)


def test_a_claim_with_a_unique_value_another_member_holds_makes_no_pass(sandbox, client, settings):
    settings.CLAIM_RATE = "100000/m"
    club = _club_with(sandbox, inputFields=_unique_email_fields(sandbox))
    _issued(club, LAURA)
    posts = sandbox.request_count("POST")
    path = link_path(fields={"name": "Another Laura", "email": LAURA["email"]})
    page = client.get(path)
    answer = client.post(path, {"nonce": nonce_of(page.content.decode())})
    assert sandbox.request_count("POST") == posts
    assert Member.objects.count() == 1
    # The value came with the link: only the issuer can change it, and the holder is told why, not the value.
    text = answer.content.decode()
    assert answer.status_code == 400 and "This link cannot be used" in text
    assert "Another pass of this card already has the Netfang / Email in this link" in text
    assert LAURA["email"] not in text


def test_a_typed_unique_value_another_member_holds_is_a_form_error_for_the_holder(sandbox, client, settings):
    settings.CLAIM_RATE = "100000/m"
    fields = [
        dict(field, type="MEMBER") if field["identifier"] == "email" else field
        for field in _unique_email_fields(sandbox)
    ]
    club = _club_with(sandbox, inputFields=fields)
    _issued(club, LAURA)
    path = link_path(fields={"name": "Another Laura"})
    page = client.get(path)
    [asked] = re.findall(r'name="(field_\d+)"', page.content.decode())  # the one field the holder fills in
    answer = client.post(path, {"nonce": nonce_of(page.content.decode()), asked: LAURA["email"]})
    assert "Another pass of this card already has this value." in answer.content.decode()
    assert Member.objects.count() == 1
    answer = client.post(path, {"nonce": nonce_of(page.content.decode()), asked: "other.laura@example.com"})
    assert answer.status_code == 302 and Member.objects.count() == 2


def test_an_upload_row_with_a_unique_value_another_member_holds_gets_no_link(sandbox, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    club = _club_with(sandbox, inputFields=_unique_email_fields(sandbox))
    _issued(club, LAURA, external_id=None)
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("name,email\nLaura Again,laura@example.com\nNew Person,new@example.com\n", encoding="utf-8")
    stdout = StringIO()
    call_command("generate_links", "--template", str(club.pk), str(source), str(out), "--json", stdout=stdout)
    assert json.loads(stdout.getvalue())["errors"] == 1
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig", newline="")))
    assert (
        rows[0]["smartpass_link"] == "" and "“laura@example.com” is already held by another member" in rows[0]["error"]
    )
    assert rows[1]["smartpass_link"] and rows[1]["error"] == ""


def test_smartpages_own_unique_refusal_says_what_clashed_never_external_id_none(sandbox):
    """A pass made on SmartPages outside the portal holds the value: the mirror cannot know, SmartPages answers
    409, and the member fails with what clashed."""
    club = _club_with(sandbox, inputFields=_unique_email_fields(sandbox))
    with client_from_settings() as smartpages:
        smartpages.create_pass(
            {
                "passTemplateId": DEMO_TEMPLATE_ID,
                "inputFields": [{"identifier": k, "value": v} for k, v in LAURA.items()],
            }
        )
    member = issuing.member_issue(template=club, values=LAURA, external_id=None, source="manual").member
    assert member.status == Member.Status.FAILED and member.upstream_conflict
    assert "None" not in member.failure_reason
    assert member.failure_reason == (
        "SmartPages refused the pass as a conflict with another pass of this template: value of a unique input "
        "field already in use for this pass template (field “email”)."
    )


# --- allowedEmailDomains in any shape ------------------------------------------------------------------------
ODD_DOMAINS = ["c.is", None, {"sortOrder": 0, "emailDomain": "b.is"}, {"emailDomain": None}, 5, " ", {"x": 1}]


def test_allowed_email_domains_in_any_shape_are_read_without_a_500(sandbox, manager, client, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    club = _club_with(sandbox, useEmailDomainVerification=True, allowedEmailDomains=ODD_DOMAINS)
    assert club.allowed_email_domains == ["c.is", "b.is"]  # sortOrder where given, else place; ties by place
    client.force_login(manager)
    page = client.get(reverse("template_detail", args=[club.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert "<li>b.is</li>" in body and "<li>c.is</li>" in body

    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("name,email\nGuðrún,gudrun@c.is\nJón,jon@elsewhere.is\n", encoding="utf-8")
    stdout = StringIO()
    call_command("generate_links", "--template", str(club.pk), str(source), str(out), "--json", stdout=stdout)
    rows = list(csv.DictReader(out.open(encoding="utf-8-sig", newline="")))
    assert rows[0]["smartpass_link"] and not rows[0]["error"]
    assert not rows[1]["smartpass_link"] and "c.is" in rows[1]["error"]


# --- status: only ACTIVE issues ------------------------------------------------------------------------------
def test_an_unknown_status_is_shown_as_it_came_and_refused_with_the_reason(sandbox, manager, client):
    club = _club_with(sandbox, status="DRAFT")
    reason = "This template's status on SmartPages is “DRAFT”; only ACTIVE templates issue passes."
    assert club.status == "DRAFT" and club.issue_refusal_reason == reason
    with pytest.raises(services.IssueRefused, match="only ACTIVE templates issue passes"):
        issuing.member_issue(template=club, values=LAURA, external_id=None, source="manual")
    assert sandbox.request_count("POST") == 0
    client.force_login(manager)
    body = client.get(reverse("template_detail", args=[club.pk])).content.decode()
    assert ">DRAFT</span>" in body and "only ACTIVE templates issue passes" in body
