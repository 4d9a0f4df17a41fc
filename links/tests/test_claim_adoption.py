"""Issue 20, goals 1 and 2: claims find the holder whatever the order of events, and resolving a conflict keeps
the holder's pass. Against the sandbox over HTTP, through the real claim pages."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from links import claims
from links.public_views import ALREADY_ENROLLED_FLAG
from members import selectors as member_selectors
from members.models import AutofillSetting, ExternalIdConflict, Member
from members.services import autofill, issuing, passes

from .claim_factories import link_path, mirror, open_and_claim
from .test_claim_concurrency import payload_of

BJORK = {"name": "Björk Guðmundsdóttir", "email": "bjork@example.is", "phone": "858 1235"}
GUDRUN = {"name": "Guðrún Jónsdóttir", "email": "gudrun@example.is", "phone": "699 1234"}
LAURA_LOOPY = {"name": "Laura Loopy", "email": "laura@example.com", "phone": "555 1234"}


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    settings.CLAIM_RATE = "100000/m"


def claim_and_follow(client, path: str):
    """A holder's click: open the link, press the button, land on the page it leads to."""
    posted = open_and_claim(client, path)
    assert posted.status_code == 302, posted.content.decode()[:500]
    return client.get(posted["Location"]), posted["Location"]


def member_pass_url(member: Member) -> str:
    return reverse("holder:pass", kwargs={"key": claims.pass_page_key(member=member)})


@pytest.mark.django_db
def test_bjork_claimed_before_autofill_her_next_click_after_it_shows_her_original_pass(client, sandbox):
    club = mirror()
    path = link_path(fields=BJORK, batch_id=5, row=1)
    first, _ = claim_and_follow(client, path)
    bjork = Member.objects.get()
    assert bjork.external_id is None and bjork.status == Member.Status.ISSUED

    autofill.autofill_setting_change(template=club, source="phone")  # staff switch autofill on mid-campaign
    page, location = claim_and_follow(client, path)

    assert Member.objects.count() == 1, "the second click made a second member"
    bjork.refresh_from_db()
    assert bjork.external_id == "+3548581235"  # adopted: her External ID filled from her phone
    assert location == f"{member_pass_url(bjork)}?{ALREADY_ENROLLED_FLAG}=1"
    assert str(bjork.pass_id) in page.content.decode()
    assert sandbox.request_count("POST", "/api/v1/pass") == 1 and len(sandbox.passes()) == 1
    assert bjork.changes.get().via == "adopted"
    assert bjork.last_claimed_at is not None
    assert not ExternalIdConflict.objects.exists()  # one pass: nothing for staff to settle


@pytest.mark.django_db
def test_gudrun_with_two_passes_gets_her_first_one_and_staff_see_the_conflict(client, sandbox, manager):
    club = mirror()
    path = link_path(fields=GUDRUN, batch_id=6, row=3)
    claim_and_follow(client, path)
    claim_and_follow(client, path)  # autofill off: the seed's behaviour, a second pass
    first, second = Member.objects.order_by("created_at", "id")

    autofill.autofill_setting_change(template=club, source="email")  # with that conflict open
    page, location = claim_and_follow(client, path)

    assert Member.objects.count() == 2, "a third pass was made"
    assert sandbox.request_count("POST", "/api/v1/pass") == 2
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.external_id, second.external_id) == ("gudrun@example.is", None)  # the earliest live pass
    assert location.startswith(member_pass_url(first)) and str(first.pass_id) in page.content.decode()
    conflict = ExternalIdConflict.objects.get()
    assert (conflict.external_id, conflict.resolved_at, conflict.opened_via) == ("gudrun@example.is", None, "claim")

    # Staff see it on the dashboard and the template page until it is resolved.
    client.force_login(manager)
    assert 'id="dashboard-open-conflicts"' in client.get(reverse("dashboard")).content.decode()
    template_page = client.get(reverse("template_detail", args=[club.pk])).content.decode()
    assert 'id="template-open-conflicts"' in template_page and "1 to resolve" in template_page


@pytest.mark.django_db
def test_the_conflict_table_suggests_the_earliest_active_pass_and_voids_only_after_a_confirmation_naming_them(
    client, sandbox, manager
):
    club = mirror()
    path = link_path(fields=GUDRUN, batch_id=6, row=3)
    claim_and_follow(client, path)
    claim_and_follow(client, path)
    first, second = Member.objects.order_by("created_at", "id")
    autofill.autofill_setting_change(template=club, source="email")
    claim_and_follow(client, path)  # adopts the first, opens the conflict
    client.force_login(manager)

    page = client.get(reverse("members:autofill_settings", args=[club.pk])).content.decode()
    table = page[page.index('id="conflicts"') :]
    for member in (first, second):
        assert str(member.pass_id) in table and f'data-member="{member.pk}"' in table
    assert "#6</a>" in table  # source batch
    assert "Last claimed" in table and "Created" in table and "Issued" in table
    assert f'<tr class="suggested" data-member="{first.pk}">' in table
    assert f'value="{first.pk}" aria-label="Keep' in table

    resolve = reverse("members:autofill_conflict_resolve", args=[club.pk])
    ask = client.post(resolve, {"external_id": "gudrun@example.is", "keep": first.pk, "void": "1"})
    assert ask.status_code == 200
    asked = ask.content.decode()
    assert "Void 1 pass?" in asked and str(second.pass_id) in asked and str(first.pass_id) in asked
    second.refresh_from_db()
    assert second.status == Member.Status.ISSUED, "voided before the confirmation"

    done = client.post(resolve, {"external_id": "gudrun@example.is", "keep": first.pk, "void": "1", "confirm": "1"})
    assert done.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Member.Status.ISSUED and second.status == Member.Status.VOIDED
    assert second.replaced_by_id == first.pk
    detail = client.get(reverse("members:member_detail", args=[second.pk])).content.decode()
    assert f'replaced by <a href="{reverse("members:member_detail", args=[first.pk])}">member #{first.pk}</a>' in detail
    assert ExternalIdConflict.objects.get().resolved_at is not None
    assert 'id="dashboard-open-conflicts"' not in client.get(reverse("dashboard")).content.decode()

    # The holder's voided pass (the second one, perhaps in her wallet) leads to the valid one.
    client.logout()
    voided_page = client.get(member_pass_url(second)).content.decode()
    assert "cancelled by the issuer" in voided_page
    assert f'id="replacement-link" href="{member_pass_url(first)}"' in voided_page
    active = [p for p in sandbox.passes() if not p.get("isVoided")]
    assert [p["id"] for p in active] == [str(first.pass_id)]


@pytest.mark.django_db(transaction=True)
def test_simultaneous_claims_after_autofill_is_switched_on_adopt_one_member_and_make_no_pass(sandbox, run_at_a_barrier):
    club = mirror()
    path = link_path(fields=GUDRUN, batch_id=7, row=1)
    payload = payload_of(path)
    for _ in range(2):  # two passes from before autofill
        context = claims.claim_context_for(payload=payload)
        claims.claim_submit(context=context, answers={}, nonce=claims.new_claim_nonce())
    first, second = Member.objects.order_by("created_at", "id")
    autofill.autofill_setting_change(template=club, source="email")

    def claim(barrier):
        context = claims.claim_context_for(payload=payload)
        nonce = claims.new_claim_nonce()
        barrier.wait(timeout=30)
        return claims.claim_submit(context=context, answers={}, nonce=nonce)

    outcomes, errors = run_at_a_barrier(50, claim)

    assert errors == [] and len(outcomes) == 50
    assert Member.objects.count() == 2
    assert sandbox.request_count("POST", "/api/v1/pass") == 2
    assert {outcome.member.pk for outcome in outcomes} == {first.pk}
    assert {outcome.kind for outcome in outcomes} == {claims.ClaimKind.ALREADY_ENROLLED}
    assert Member.objects.get(pk=first.pk).external_id == "gudrun@example.is"
    assert ExternalIdConflict.objects.filter(resolved_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_saving_autofill_on_a_template_with_members_shows_what_it_would_fill_and_fills_when_confirmed(
    client, sandbox, manager
):
    club = mirror()
    claim_and_follow(client, link_path(fields=BJORK, batch_id=5, row=1))
    gudrun = link_path(fields=GUDRUN, batch_id=5, row=2)
    claim_and_follow(client, gudrun)
    claim_and_follow(client, gudrun)
    client.force_login(manager)
    url = reverse("members:autofill_settings", args=[club.pk])

    step = client.post(url, {"source": "email", "field_identifier": "", "already_enrolled_message": ""})

    assert step.status_code == 200
    text = step.content.decode()
    assert 'id="autofill-confirm"' in text
    assert '<strong data-count="fill">1</strong> would get an External ID.' in text
    assert '<strong data-count="conflicts">2</strong> in 1 conflict' in text
    # What happens to them is said as it is: none gets the ID until a manager resolves the conflict.
    assert "None of them gets the ID until you choose the pass to keep and press “Resolve”" in text
    assert "Save and fill in 1 External ID<" in text and "gudrun@example.is" in text
    assert not AutofillSetting.objects.filter(template=club, source="email").exists()  # not saved yet
    assert not Member.objects.filter(external_id__isnull=False).exists()

    done = client.post(
        url, {"source": "email", "field_identifier": "", "already_enrolled_message": "", "confirm": "1", "fill": "1"}
    )

    assert done.status_code == 302
    assert Member.objects.get(display_name=BJORK["name"]).external_id == "bjork@example.is"
    assert ExternalIdConflict.objects.get(resolved_at__isnull=True).external_id == "gudrun@example.is"
    follow = client.get(done["Location"]).content.decode()
    assert "Autofill setting saved. 1 External ID filled in; 2 members in conflicts have none yet" in follow
    assert 'id="conflicts"' in follow and "gudrun@example.is" in follow


@pytest.mark.django_db
def test_a_voided_pass_page_in_icelandic_leads_to_the_current_pass(client, sandbox):
    club = mirror()
    first = Member.objects.create(template=club, source="link", status="issued", pass_id=uuid.uuid4())
    second = Member.objects.create(
        template=club, source="link", status="voided", pass_id=uuid.uuid4(), replaced_by=first
    )
    page = client.get(member_pass_url(second), HTTP_ACCEPT_LANGUAGE="is").content.decode()
    assert "Útgefandinn hefur ógilt þetta kort." in page and "Opna kortið mitt" in page
    assert member_pass_url(first) in page
    first.status = "voided"
    first.save()
    assert 'id="replacement-link"' not in client.get(member_pass_url(second)).content.decode()


@pytest.mark.django_db
def test_a_conflict_settled_another_way_stops_showing_on_the_dashboard(client, sandbox, manager):
    club = mirror()
    path = link_path(fields=GUDRUN, batch_id=6, row=3)
    claim_and_follow(client, path)
    claim_and_follow(client, path)
    autofill.autofill_setting_change(template=club, source="email")
    claim_and_follow(client, path)  # opens the conflict
    autofill.autofill_setting_change(template=club, source="off")  # no autofill, no conflict
    client.force_login(manager)
    assert 'id="dashboard-open-conflicts"' in client.get(reverse("dashboard")).content.decode()

    page = client.get(reverse("members:autofill_settings", args=[club.pk])).content.decode()

    assert 'id="conflicts"' not in page
    assert not ExternalIdConflict.objects.filter(resolved_at__isnull=True).exists()
    assert 'id="dashboard-open-conflicts"' not in client.get(reverse("dashboard")).content.decode()


@pytest.mark.django_db
def test_staff_adding_a_holder_who_claimed_before_autofill_get_her_existing_member(client, sandbox, manager):
    club = mirror()
    claim_and_follow(client, link_path(fields=BJORK, batch_id=5, row=1))
    bjork = Member.objects.get()
    autofill.autofill_setting_change(template=club, source="email")
    client.force_login(manager)
    values = {"field_name": BJORK["name"], "field_email": " BJORK@example.is", "field_phone": "", "external_id": ""}

    added = client.post(reverse("members:member_add", args=[club.pk]), values, follow=True)

    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1
    assert "already exists on this template; no new pass was made" in added.content.decode()
    bjork.refresh_from_db()
    assert bjork.external_id == "bjork@example.is"


@pytest.mark.django_db
def test_a_pass_voided_before_replacements_were_recorded_still_leads_to_the_holders_live_pass(client, sandbox):
    """The issue's Guðrún: her first, installed pass was voided by the old resolution (nothing recorded)."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    values = {"name": GUDRUN["name"], "email": "gudrun@example.is"}
    kept = Member.objects.create(
        template=club,
        source="link",
        status="issued",
        pass_id=uuid.uuid4(),
        values=values,
        external_id="gudrun@example.is",
    )
    voided = Member.objects.create(
        template=club, source="link", status="voided", pass_id=uuid.uuid4(), values=values, autofill_excluded=True
    )
    someone_else = Member.objects.create(
        template=club, source="link", status="voided", pass_id=uuid.uuid4(), values={"email": "other@example.is"}
    )
    assert f'href="{member_pass_url(kept)}"' in client.get(member_pass_url(voided)).content.decode()
    assert 'id="replacement-link"' not in client.get(member_pass_url(someone_else)).content.decode()


@pytest.mark.django_db
def test_a_form_posted_again_finds_its_own_member_before_the_holder_of_the_external_id(sandbox):
    """The press looks for this form's member and for the External ID's in one query: a form posted again (the
    back button) shows what its first post made, even when another member holds the External ID the link
    gives now (autofill turned on between the two posts)."""
    club = mirror()
    holder = Member.objects.create(
        template=club, source="link", status="issued", pass_id=uuid.uuid4(), external_id="gudrun@example.is"
    )
    own = Member.objects.create(
        template=club, source="link", status="issued", pass_id=uuid.uuid4(), claim_nonce="n" * 24
    )

    assert claims._member_for_claim(template=club, external_id="gudrun@example.is", nonce="n" * 24) == own
    assert claims._member_for_claim(template=club, external_id="gudrun@example.is", nonce="m" * 24) == holder
    assert claims._member_for_claim(template=club, external_id=None, nonce="n" * 24) == own
    assert claims._member_for_claim(template=club, external_id=None, nonce="m" * 24) is None


@pytest.mark.django_db
def test_laura_whose_address_staff_corrected_gets_her_pass_from_a_link_for_the_new_address(client, sandbox, manager):
    """An External ID never changes (as in PassKit), but the address it was read from can: staff fix a typo in it.
    A link made for the corrected address shows the pass whose address it now is, not a second pass; so does
    staff's "Add member" with that address."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    typo = {"name": "Laura Loopy", "email": "laura@gmial.com", "phone": "555 1234"}
    claim_and_follow(client, link_path(fields=typo, batch_id=7, row=1))
    laura = Member.objects.get()
    assert laura.external_id == "laura@gmial.com"

    passes.member_edit(member=laura, values={**typo, "email": "Laura@gmail.com"}, external_id="", user=manager)
    laura.refresh_from_db()
    assert (laura.external_id, laura.values["email"]) == ("laura@gmial.com", "laura@gmail.com")

    corrected = link_path(fields={**typo, "email": "laura@gmail.com"}, batch_id=8, row=1)
    assert ">Show my pass</button>" in client.get(corrected).content.decode()  # the button says what it will do
    page, location = claim_and_follow(client, corrected)

    assert Member.objects.count() == 1, "the corrected address made a second pass"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1 and len(sandbox.passes()) == 1
    assert location == f"{member_pass_url(laura)}?{ALREADY_ENROLLED_FLAG}=1"
    assert str(laura.pass_id) in page.content.decode()
    laura.refresh_from_db()
    assert laura.external_id == "laura@gmial.com", "an External ID never changes"
    assert not ExternalIdConflict.objects.exists()

    added = issuing.member_add(template=club, values={**typo, "email": "laura@gmail.com"}, external_id="", user=manager)
    assert (added.kind, added.member.pk) == (issuing.IssueKind.ALREADY_ENROLLED, laura.pk)
    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "source, edited_upstream, link_value",
    [("email", "Laura@Example.com", "laura@example.com"), ("phone", "699 1234", "6991234")],
)
def test_a_value_edited_on_smartpages_and_read_back_still_finds_the_holder(
    client, sandbox, source, edited_upstream, link_value
):
    """SmartPages keeps a value as it was typed there; a refresh reads it back. The member's search copies hold it in
    its normal form, as every entry path stores it, so autofill turned on afterwards adopts that pass."""
    club = mirror()
    claim_and_follow(client, link_path(fields=LAURA_LOOPY, batch_id=1, row=1))  # autofill off
    laura = Member.objects.get()
    sandbox.change_pass(str(laura.pass_id), values={source: edited_upstream})
    passes.member_refresh(member=laura)
    laura.refresh_from_db()
    assert laura.values[source] == edited_upstream  # the mirror keeps SmartPages' text

    autofill.autofill_setting_change(template=club, source=source)
    claim_and_follow(client, link_path(fields={**LAURA_LOOPY, source: link_value}, batch_id=2, row=1))

    assert Member.objects.count() == 1, "a second pass for the value edited on SmartPages"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_an_address_corrected_on_smartpages_and_read_back_finds_the_holder(client, sandbox):
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    typo = {**LAURA_LOOPY, "email": "laura@gmial.com"}
    claim_and_follow(client, link_path(fields=typo, batch_id=1, row=1))
    laura = Member.objects.get()
    sandbox.change_pass(str(laura.pass_id), values={"email": "Laura@Gmail.com"})
    passes.member_refresh(member=laura)

    page, location = claim_and_follow(client, link_path(fields={**typo, "email": "laura@gmail.com"}, batch_id=2, row=1))

    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1
    assert location == f"{member_pass_url(laura)}?{ALREADY_ENROLLED_FLAG}=1"


@pytest.mark.django_db
def test_a_member_with_the_issuers_own_external_id_is_not_taken_for_a_corrected_address(client, sandbox):
    """Anna's External ID is the issuer's member number; Björn shares her family's address. His link, without an ID
    of its own, gets him his own pass: a member number is no sign that an address was corrected."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    shared = "family@example.is"
    claim_and_follow(client, link_path(fields={**LAURA_LOOPY, "email": shared}, external_id="M-1", batch_id=9, row=1))
    anna = Member.objects.get()
    assert anna.external_id == "M-1"

    bjorn = {"name": "Björn Jónsson", "email": shared, "phone": "699 0000"}
    page, location = claim_and_follow(client, link_path(fields=bjorn, batch_id=9, row=2))

    assert Member.objects.count() == 2 and sandbox.request_count("POST", "/api/v1/pass") == 2
    his = Member.objects.exclude(pk=anna.pk).get()
    assert (his.external_id, his.display_name) == (shared, "Björn Jónsson")
    assert location == member_pass_url(his) and str(anna.pass_id) not in page.content.decode()


@pytest.mark.django_db
def test_a_cancelled_pass_leads_to_the_holders_pass_whose_address_was_corrected(client, sandbox, manager):
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    claim_and_follow(client, link_path(fields=LAURA_LOOPY, batch_id=10, row=1))
    first = Member.objects.get()
    passes.member_void(member=first, user=manager)  # voided by hand: nothing records what replaced it
    typo = {**LAURA_LOOPY, "email": "laura@exmaple.com"}
    claim_and_follow(client, link_path(fields=typo, batch_id=11, row=1))
    second = Member.objects.exclude(pk=first.pk).get()
    passes.member_edit(member=second, values=LAURA_LOOPY, external_id="", user=manager)  # the typo fixed

    page, location = claim_and_follow(client, link_path(fields=LAURA_LOOPY, batch_id=12, row=1))

    assert location.startswith(member_pass_url(first))  # her address's External ID is the cancelled pass's
    body = page.content.decode()
    assert "cancelled by the issuer" in body and 'id="replacement-link"' in body
    assert member_pass_url(second) in body
    assert Member.objects.count() == 2 and sandbox.request_count("POST", "/api/v1/pass") == 2


@pytest.mark.django_db(transaction=True)
def test_copies_a_refresh_stored_before_they_were_normalised_are_made_again_by_migration_0017(client, sandbox):
    """Until 5 Dec a refresh stored the email and phone copies as SmartPages keeps the values. Migration 0017 makes
    the copies of the members a refresh changed again, so Laura's next click after autofill is on finds her pass."""
    club = mirror()
    claim_and_follow(client, link_path(fields=LAURA_LOOPY, batch_id=1, row=1))  # autofill off
    laura = Member.objects.get()
    sandbox.change_pass(str(laura.pass_id), values={"email": "Laura@Example.com"})
    passes.member_refresh(member=laura)
    Member.objects.filter(pk=laura.pk).update(
        email="Laura@Example.com", phone="555 1234"
    )  # as such a refresh left them
    autofill.autofill_setting_change(template=club, source="email")
    assert member_selectors.autofill_value_members(template=club, external_id="laura@example.com").first is None

    executor = MigrationExecutor(connection)
    executor.migrate([("members", "0016_member_status_counts")])
    executor.loader.build_graph()
    executor.migrate([("members", "0017_refreshed_search_copies_normalised")])

    laura.refresh_from_db()
    assert (laura.email, laura.phone, laura.values["email"]) == (
        "laura@example.com",
        "+3545551234",
        "Laura@Example.com",
    )
    assert laura.search_text == "laura loopy\nlaura@example.com"
    claim_and_follow(client, link_path(fields=LAURA_LOOPY, batch_id=2, row=1))
    assert Member.objects.count() == 1, "a second pass for a holder whose copy a refresh stored as typed"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_a_pass_redeemed_before_autofill_was_on_is_adopted_not_issued_again(client, sandbox):
    """Guðrún claimed before autofill was on; her coupon was redeemed. Autofill is switched on and she clicks the
    same link: her redeemed pass is adopted and shown, as it would have been had autofill been on from the start,
    not a second, unused coupon."""
    club = mirror()
    path = link_path(fields=GUDRUN, batch_id=1, row=1)
    claim_and_follow(client, path)
    gudrun = Member.objects.get()
    sandbox.change_pass(str(gudrun.pass_id), status="REDEEMED")
    passes.member_refresh(member=gudrun)
    autofill.autofill_setting_change(template=club, source="email")

    page, _location = claim_and_follow(client, path)

    assert "This pass has been redeemed." in page.content.decode()
    assert Member.objects.count() == 1, "a second member for a holder whose pass was redeemed"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_a_redeemed_pass_whose_address_staff_corrected_is_found_by_the_corrected_address(client, sandbox, manager):
    """Laura's pass (autofill by email) was made under a typo; staff corrected her address; her pass was then
    redeemed. A link for the corrected address shows that pass (a redeemed pass is still the holder's)."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    typo = {"name": "Laura Loopy", "email": "laura@gmial.com"}
    claim_and_follow(client, link_path(fields=typo, batch_id=1, row=1))
    laura = Member.objects.get()
    passes.member_edit(member=laura, values={**typo, "email": "laura@gmail.com"}, external_id="", user=manager)
    sandbox.change_pass(str(laura.pass_id), status="REDEEMED")
    passes.member_refresh(member=laura)

    claim_and_follow(client, link_path(fields={**typo, "email": "laura@gmail.com"}, batch_id=2, row=1))

    assert Member.objects.count() == 1, "a second pass for the holder whose redeemed pass had its address corrected"
    assert sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_a_holder_with_a_pass_still_gets_it_after_the_issuer_stops_giving_out_new_ones(client, sandbox):
    """The issuer stops giving out passes (disableIssue on SmartPages, mirrored by the next sync). Guðrún, who has
    hers, follows her link again: her pass, not "no longer available". A link naming nobody still says that."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=GUDRUN, batch_id=1, row=1)
    claim_and_follow(client, path)
    gudrun = Member.objects.get()
    sandbox.update_template(str(club.pk), disableIssue=True)
    mirror()

    page, location = claim_and_follow(client, path)

    assert location == f"{member_pass_url(gudrun)}?{ALREADY_ENROLLED_FLAG}=1"
    assert str(gudrun.pass_id) in page.content.decode()
    stranger = link_path(fields=BJORK, batch_id=1, row=2)
    assert client.get(stranger).status_code == 410
    assert client.post(stranger, {"nonce": claims.new_claim_nonce()}).status_code == 410
    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_a_holder_with_a_pass_still_gets_it_after_a_rule_her_link_breaks_was_added(client, sandbox):
    """The issuer limits sign-ups to the club's own domain (allowed email domains on SmartPages, mirrored). Guðrún's
    link, whose address the rule now refuses, names the pass she has: it shows it instead of "cannot be used"."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=GUDRUN, batch_id=1, row=1)
    claim_and_follow(client, path)
    gudrun = Member.objects.get()
    sandbox.update_template(
        str(club.pk),
        useEmailDomainVerification=True,
        allowedEmailDomains=[{"sortOrder": 1, "emailDomain": "sundfelag.is"}],
    )
    mirror()

    page, location = claim_and_follow(client, path)

    assert location == f"{member_pass_url(gudrun)}?{ALREADY_ENROLLED_FLAG}=1"
    assert str(gudrun.pass_id) in page.content.decode()
    assert client.get(link_path(fields=BJORK, batch_id=1, row=2)).status_code == 400  # a new holder: refused
    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
@pytest.mark.parametrize("source, as_written", [("email", "Gudrun@Example.is"), ("phone", "699 1234")])
def test_a_links_own_external_id_stored_as_written_still_names_her_pass_after_autofill_is_on(
    client, sandbox, source, as_written
):
    """The campaign CSV's External ID column held Guðrún's address or number as the issuer wrote it; autofill was off,
    so her member holds it as written. Autofill switched on since reads the same link's ID in its normal form: the
    link still shows her pass, no second one."""
    club = mirror()
    path = link_path(fields=GUDRUN, external_id=as_written, batch_id=1, row=1)
    claim_and_follow(client, path)
    gudrun = Member.objects.get()
    assert gudrun.external_id == as_written
    autofill.autofill_setting_change(template=club, source=source)

    assert "Show my pass</button>" in client.get(path).content.decode()  # the page knows her pass already
    _page, location = claim_and_follow(client, path)

    assert location == f"{member_pass_url(gudrun)}?{ALREADY_ENROLLED_FLAG}=1"
    assert Member.objects.count() == 1 and sandbox.request_count("POST", "/api/v1/pass") == 1


@pytest.mark.django_db
def test_a_refused_member_is_not_issued_again_once_the_template_stops_issuing(client, sandbox):
    """SmartPages refused Guðrún's pass (issuing was off there before the mirror knew). Once the mirror knows, her link
    answers "no longer available": showing her member would mean issuing it again, to a template that gives out no
    pass, and nothing is posted."""
    club = mirror()
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=GUDRUN, batch_id=1, row=1)
    sandbox.update_template(str(club.pk), disableIssue=True)  # upstream only, for the first claim
    assert open_and_claim(client, path).status_code == 302
    assert Member.objects.get().status == Member.Status.FAILED
    mirror()  # the mirror learns it
    posts = sandbox.request_count("POST", "/api/v1/pass")

    assert client.get(path).status_code == 410
    assert client.post(path, {"nonce": claims.new_claim_nonce()}).status_code == 410
    assert sandbox.request_count("POST", "/api/v1/pass") == posts
