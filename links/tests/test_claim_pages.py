"""The holder's pages over the sandbox (real HTTP): the claim page, the claim, the pass page, errors, i18n."""

import base64
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from links import claims, tokens
from links.keyring import link_keys
from links.models import LinkBatch
from links.public_views import ALREADY_ENROLLED_FLAG
from members.models import Member
from members.services import autofill, issuing, passes
from sandbox import DEMO_TEMPLATE_ID, Faults
from templates_sync import sync
from templates_sync.client import client_from_settings

from .claim_factories import LAURA, PERCY, add_member_field_template, link_path, mirror, nonce_of, open_and_claim
from .test_qr import read_qr_svg

POST_PASS = ("POST", "/api/v1/pass")


@pytest.fixture(autouse=True)
def generous_claim_rate(settings):
    # The rate-limit counters live in the shared cache: without this, the suite's own claims would hit them.
    settings.CLAIM_RATE = "100000/m"


def upstream_posts(sandbox) -> int:
    return sandbox.request_count(*POST_PASS)


def pass_id_on(html: str) -> str:
    match = re.search(r'id="pass-id">([0-9a-f-]{36})<', html)
    assert match, "no Pass ID on the page"
    return match.group(1)


# --- links that are not ours -------------------------------------------------------------------------------
def test_every_broken_token_gets_the_identical_404_page_and_nothing_is_made(client, club, sandbox):
    good = link_path(fields=PERCY).removeprefix("/p/")
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))

    def flipped(position: int) -> str:
        changed = bytearray(raw)
        changed[position] ^= 0x01
        return base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")

    foreign_keys = tokens.parse_link_keys(tokens.generate_key_entry("other"))
    same_id_other_key = tokens.parse_link_keys(f"{link_keys().current_key_id}:" + base64.b64encode(b"k" * 32).decode())
    expired = tokens.encode(
        tokens.LinkPayload(
            template_id=uuid.UUID(DEMO_TEMPLATE_ID),
            fields=PERCY,
            expires_at=datetime(2020, 1, 1, tzinfo=UTC),
        ),
        link_keys(),
    )
    broken = {
        "bit flip in the version": flipped(0),
        "bit flip in the key id": flipped(3),
        "bit flip in the nonce": flipped(len(raw) - 30),
        "bit flip in the ciphertext": flipped(len(raw) - 20),
        "bit flip in the tag": flipped(len(raw) - 1),
        "truncated by one": good[:-1],
        "truncated by half": good[: len(good) // 2],
        "a key we do not have": link_path(fields=PERCY, keys=foreign_keys).removeprefix("/p/"),
        "our key id, another key": link_path(fields=PERCY, keys=same_id_other_key).removeprefix("/p/"),
        "expired": expired,
        "garbage": "hello-world",
        "not base64": "%21%21%21%24",
        "padding": good + "==",
        "very long": "A" * 5000,
    }
    responses = {name: client.get("/p/" + token) for name, token in broken.items()}

    assert {name: r.status_code for name, r in responses.items()} == {name: 404 for name in broken}
    bodies = {r.content for r in responses.values()}
    assert len(bodies) == 1, "every failure must render the same body"
    body = bodies.pop().decode()
    assert "Link not found" in body and "Percy" not in body and good[:20] not in body
    # A POST to a broken link is refused the same way.
    assert client.post("/p/" + broken["garbage"], {"nonce": "x" * 24}).content == responses["garbage"].content
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0


def test_a_tampered_pass_page_address_gets_the_same_404_page(client, club, sandbox):
    response = open_and_claim(client, link_path(fields=PERCY))
    pass_url = response["Location"]
    member_id = Member.objects.get().pk
    not_found = client.get("/p/garbage").content

    for url in (
        pass_url[:-1] + ("A" if pass_url[-1] != "A" else "B"),
        f"/pass/{member_id}",
        f"/pass/{member_id + 1}:{pass_url.rsplit(':', 1)[1]}",
    ):
        answer = client.get(url)
        assert (answer.status_code, answer.content) == (404, not_found), url


# --- the claim page -----------------------------------------------------------------------------------------
def test_opening_a_link_shows_the_template_and_masked_values_and_creates_nothing(client, club, sandbox):
    path = link_path(fields=LAURA)

    for _ in range(3):  # a mail scanner, a link preview, the holder
        response = client.get(path)
        assert response.status_code == 200

    body = response.content.decode()
    assert "Klúbbkort Sundfélagsins" in body and "ókeypis aðgang" in body  # name and description
    assert "Laura Loopy" in body  # names are shown in full, so the holder knows the link is theirs
    assert "L•••••••••y@Example.COM" in body
    assert "Laura.Loopy@Example.COM" not in body and "5551234" not in body and "555 1234" not in body
    assert "••• ••34" in body
    assert 'type="submit"' in body and body.count("<form") == 2  # the claim button and the language switch
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0


def test_masking_keeps_only_the_start_and_end_of_an_email_and_the_last_digits_of_a_number():
    assert claims.masked_value("EMAIL", "laura.loopy@example.com") == "l•••••••••y@example.com"
    assert claims.masked_value("EMAIL", "jo@x.is") == "j•@x.is"
    assert claims.masked_value("PHONE_NUMBER", "+3546151234") == "+••••••••34"
    assert claims.masked_value("KENNITALA", "010130-2989") == "••••••-••89"
    assert claims.masked_value("TEXT", "Laura Loopy") == "Laura Loopy"


@pytest.mark.parametrize("change", ["voided", "issuing disabled", "removed upstream", "sold"])
def test_a_template_that_can_no_longer_issue_gets_the_friendly_410_page(client, club, sandbox, change):
    path = link_path(fields=PERCY)
    nonce = nonce_of(client.get(path).content.decode())
    if change == "voided":
        sandbox.update_template(DEMO_TEMPLATE_ID, status="VOIDED")
    elif change == "issuing disabled":
        sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=True)
    elif change == "sold":
        sandbox.update_template(DEMO_TEMPLATE_ID, passPrice=1990)
    else:
        sandbox.remove_template(DEMO_TEMPLATE_ID)
    assert sync.templates_sync_all().status == "succeeded"

    for response in (client.get(path), client.post(path, {"nonce": nonce})):
        assert response.status_code == 410
        assert "This pass is no longer available" in response.content.decode()
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0


def test_mandatory_member_fields_the_link_lacks_are_asked_for_and_validated(client, db, sandbox):
    template_id = add_member_field_template(sandbox)
    mirror(template_id)
    path = link_path(template_id, {"name": "Gunnar Nemandi"})

    page = client.get(path).content.decode()
    assert "Kennitala" in page and "Skólanetfang / School email" in page and 'type="email"' in page
    # The template's rules are told before the first try, each beneath its field (and read out with it).
    assert '<p class="help" id="id_field_0_hint">You must be at least 18 years old to get this pass.</p>' in page
    assert '<p class="help" id="id_field_1_hint">Use an email address at skoli.is.</p>' in page
    assert 'aria-describedby="id_field_1_hint"' in page
    nonce = nonce_of(page)

    empty = client.post(path, {"nonce": nonce})
    assert empty.status_code == 200 and empty.content.decode().count("Please fill in this field.") == 2

    wrong = client.post(
        path, {"nonce": nonce, "field_0": "010115-2990", "field_1": "gunnar@gmail.com"}
    ).content.decode()
    assert "You must be at least 18 years old to get this pass." in wrong
    # The error replaces the hint, and the input's description points at it.
    assert '<p class="error-text" role="alert" id="id_field_1_hint">Use an email address at skoli.is.</p>' in wrong
    assert wrong.count('id="id_field_1_hint"') == 1
    assert 'value="gunnar@gmail.com"' in wrong  # what was typed stays in the form
    malformed = client.post(path, {"nonce": nonce, "field_0": "12345", "field_1": "not an address"}).content.decode()
    assert "Enter a valid kennitala" in malformed and "Enter a valid email address" in malformed
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0

    done = client.post(path, {"nonce": nonce, "field_0": "010130-2989", "field_1": " Gunnar@Skoli.IS "})
    assert done.status_code == 302 and done["Location"].startswith("/pass/")
    member = Member.objects.get()
    assert member.values == {"name": "Gunnar Nemandi", "kennitala": "0101302989", "schoolEmail": "gunnar@skoli.is"}
    assert member.status == Member.Status.ISSUED and member.external_id is None


def test_a_holder_cannot_override_the_values_the_issuer_put_in_the_link(client, club, sandbox):
    path = link_path(fields=PERCY)
    nonce = nonce_of(client.get(path).content.decode())
    client.post(path, {"nonce": nonce, "name": "Mallory", "email": "mallory@evil.example", "field_0": "x"})
    assert Member.objects.get().values["name"] == "Percy PassKit"
    assert sandbox.passes(DEMO_TEMPLATE_ID)[0]["inputFields"][0] == {"identifier": "name", "value": "Percy PassKit"}


def test_last_claimed_is_written_once_a_minute_however_many_claims_of_the_pass_come(client, club, sandbox):
    """A link shared in a group chat: every claim shows the one pass, and "last claimed" (shown to the minute)
    is written again only when the minute it shows has passed, not by each of them."""
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=PERCY)
    if timezone.now().second >= 55:
        time.sleep(6)  # the claims below must fall in one minute
    open_and_claim(client, path)
    member = Member.objects.get()
    stamped = member.last_claimed_at
    for _ in range(3):
        assert open_and_claim(client, path).status_code == 302
    member.refresh_from_db()
    assert member.last_claimed_at == stamped

    # Stamped at 59 s of the minute before: the next claim, in a new minute, writes it again.
    last_minute = timezone.now().replace(second=59) - timedelta(minutes=1)
    Member.objects.filter(pk=member.pk).update(last_claimed_at=last_minute)
    before_claim = timezone.now()
    open_and_claim(client, path)
    member.refresh_from_db()
    assert member.last_claimed_at >= before_claim
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1


def test_a_link_whose_own_values_are_invalid_says_so_without_issuing(client, club, sandbox):
    path = link_path(fields={"name": "Percy PassKit", "email": "not-an-email"})
    # Said when the link is opened: no form to fill in for nothing.
    opened = client.get(path)
    assert opened.status_code == 400 and "This link cannot be used" in opened.content.decode()
    assert 'name="nonce"' not in opened.content.decode()
    # A form shown before the template changed, posted now: the same answer, nothing issued.
    response = client.post(path, {"nonce": claims.new_claim_nonce()})
    assert response.status_code == 400 and "This link cannot be used" in response.content.decode()
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0


# --- the claim ---------------------------------------------------------------------------------------------------
def test_claiming_issues_the_pass_and_shows_it_with_a_qr_code_and_the_wallet_link(client, club, sandbox):
    response = open_and_claim(client, link_path(fields=PERCY, batch_id=41, row=7))

    assert response.status_code == 302
    member = Member.objects.get()
    assert (member.status, member.source, member.source_batch_id, member.source_row) == ("issued", "link", 41, 7)
    assert member.external_id is None and member.last_claimed_at is not None  # stamped with the row itself
    page = client.get(response["Location"])
    body = page.content.decode()
    assert page.status_code == 200 and "Refresh" not in page
    assert "Klúbbkort Sundfélagsins" in body and "Percy PassKit" in body
    assert pass_id_on(body) == str(member.pass_id) == sandbox.passes()[0]["id"]
    # The QR code above it, read back, is the Pass ID too.
    assert read_qr_svg(re.search(r'<svg [^>]*class="qr-code".*?</svg>', body, re.S).group(0)) == str(member.pass_id)
    assert f'href="{sandbox.url}/distribution/pass/{member.pass_id}"' in body


def test_the_same_form_posted_twice_issues_once_but_a_new_visit_makes_a_new_member(client, club, sandbox):
    path = link_path(fields=PERCY)
    nonce = nonce_of(client.get(path).content.decode())

    first = client.post(path, {"nonce": nonce})
    second = client.post(path, {"nonce": nonce})  # double tap, or back and press again

    assert first["Location"] == second["Location"]
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1

    third = open_and_claim(client, path)  # without an External ID, every visit is a new claim (the seed)
    assert third["Location"] != first["Location"]
    assert Member.objects.count() == 2 and upstream_posts(sandbox) == 2
    assert len({m.pass_id for m in Member.objects.all()}) == 2


def test_a_post_without_the_forms_nonce_issues_nothing(client, club, sandbox):
    path = link_path(fields=PERCY)
    for nonce in ("", "short", "<script>" * 4):
        response = client.post(path, {"nonce": nonce})
        body = response.content.decode()
        assert response.status_code == 200 and "This form has expired" in body and "<script><script>" not in body
    assert Member.objects.count() == 0 and upstream_posts(sandbox) == 0


def test_csrf_protection_stays_on_for_the_claim(club, sandbox):
    client = Client(enforce_csrf_checks=True)
    path = link_path(fields=PERCY)
    page = client.get(path).content.decode()
    assert client.post(path, {"nonce": nonce_of(page)}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(path, {"nonce": nonce_of(page), "csrfmiddlewaretoken": token}).status_code == 302
    assert Member.objects.count() == 1


def test_with_autofill_on_every_claim_of_a_link_shows_the_same_pass(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=LAURA)

    first = open_and_claim(client, path)
    page = client.get(path).content.decode()
    assert "Show my pass" in page  # the page already knows, without creating anything
    second = open_and_claim(client, path)

    # The same pass page, flagged as a second visit (its note is the only difference).
    assert second["Location"] == first["Location"] + "?enrolled=1"
    member = Member.objects.get()
    assert member.external_id == "laura.loopy@example.com" and upstream_posts(sandbox) == 1
    assert sandbox.passes()[0]["externalIdentifier"] == "laura.loopy@example.com"
    again = client.get(second["Location"]).content.decode()
    assert pass_id_on(again) == str(member.pass_id) and "You already have this pass" in again
    assert "You already have this pass" not in client.get(first["Location"]).content.decode()


def test_an_explicit_external_id_wins_and_staff_can_set_an_already_enrolled_message(client, club, sandbox):
    autofill.autofill_setting_change(
        template=club, source="email", already_enrolled_message="Þú ert nú þegar skráð/ur.\nSjáumst í lauginni!"
    )
    path = link_path(fields=LAURA, external_id="SUND-0042")

    first = open_and_claim(client, path)
    assert first.status_code == 302
    second = open_and_claim(client, path)

    # The seed's promise with a staff message: the original pass (same Pass ID, QR code) with the message on it.
    assert second.status_code == 302 and second["Location"] == first["Location"] + "?enrolled=1"
    body = client.get(second["Location"]).content.decode()
    member = Member.objects.get()
    assert "Þú ert nú þegar skráð/ur." in body and "Sjáumst í lauginni!" in body
    assert pass_id_on(body) == str(member.pass_id) and "qr-code" in body
    assert member.external_id == "SUND-0042" and upstream_posts(sandbox) == 1


def test_a_double_tap_shows_the_first_posts_pass_even_when_an_already_enrolled_message_is_set(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email", already_enrolled_message="Velkomin aftur!")
    path = link_path(fields=LAURA)
    nonce = nonce_of(client.get(path).content.decode())

    first, second = client.post(path, {"nonce": nonce}), client.post(path, {"nonce": nonce})

    assert first.status_code == second.status_code == 302 and first["Location"] == second["Location"]
    later = open_and_claim(client, path)  # a later visit is "enrolled"
    assert later["Location"] == first["Location"] + "?enrolled=1"
    assert "Velkomin aftur!" in client.get(later["Location"]).content.decode()


def test_a_single_use_link_issues_once_and_every_later_claim_of_its_row_shows_that_pass(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="off", already_enrolled_message="Þú átt kortið nú þegar.")
    single, ordinary = (link_path(fields=PERCY, batch_id=5, row=2, single_use=use) for use in (True, False))

    first = open_and_claim(client, single)
    assert "Show my pass" in client.get(single).content.decode()  # the claim page knows the row is claimed
    second = open_and_claim(Client(), single)  # another browser: the link alone decides

    assert second["Location"] == first["Location"] + "?enrolled=1"
    member = Member.objects.get()
    again = client.get(second["Location"]).content.decode()
    assert pass_id_on(again) == str(member.pass_id) and "Þú átt kortið nú þegar." in again
    assert member.external_id is None and upstream_posts(sandbox) == 1
    # The row's key is not a nonce a form may post: nobody reaches a row's pass by typing its key.
    posted = client.post(ordinary, {"nonce": "row:5:2"})
    assert posted.status_code != 302 and Member.objects.count() == 1
    # Default off (the seed's Percy): the same values without the flag make a new pass per claim.
    open_and_claim(client, ordinary), open_and_claim(client, ordinary)
    assert Member.objects.count() == 3 and upstream_posts(sandbox) == 3


def test_a_voided_pass_page_says_the_pass_was_cancelled_without_a_qr_code(client, club, sandbox, manager):
    response = open_and_claim(client, link_path(fields=PERCY))
    passes.member_void(member=Member.objects.get(), user=manager)

    body = client.get(response["Location"]).content.decode()
    assert "This pass has been cancelled by the issuer." in body and "<svg" not in body


def test_a_holder_whose_pass_was_voided_claims_again_and_is_told_how_to_reach_the_issuer(
    client, club, sandbox, manager
):
    """Autofill shows a holder the pass their External ID already has, voided or not (an External ID never moves):
    the page says it was cancelled and how to reach the issuer, not "You already have this pass"."""
    autofill.autofill_setting_change(
        template=club, source="email", contact_help="Hringdu í síma 555 1234 / Call 555 1234."
    )
    path = link_path(fields=PERCY)
    open_and_claim(client, path)
    passes.member_void(member=Member.objects.get(), user=manager)

    again = open_and_claim(client, path)
    body = client.get(again["Location"]).content.decode()

    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1
    assert "This pass has been cancelled by the issuer." in body
    assert "You already have this pass" not in body and "<svg" not in body
    assert 'id="contact-help"' in body and "Call 555 1234." in body


def test_the_batch_page_counts_claims_members_created_and_duplicates_prevented(client, club, sandbox, viewer):
    autofill.autofill_setting_change(template=club, source="email")
    batch = LinkBatch.objects.create(
        template=club,
        original_name="herferd.csv",
        encoding="utf-8",
        delimiter=",",
        status=LinkBatch.Status.SUCCEEDED,
        rows_total=2,
        rows_done=2,
        links=2,
    )
    laura, percy = link_path(fields=LAURA, batch_id=batch.pk, row=1), link_path(fields=PERCY, batch_id=batch.pk, row=2)
    for path in (laura, laura, laura, percy):
        open_and_claim(client, path)
    nonce = nonce_of(client.get(percy).content.decode())
    client.post(percy, {"nonce": nonce})
    client.post(percy, {"nonce": nonce})  # a double tap: prevented too

    staff = Client()
    staff.force_login(viewer)
    page = staff.get(reverse("links:batch_detail", args=[batch.pk])).content.decode()
    counts = dict(re.findall(r'id="(claims-count|claim-members-created|claim-duplicates-prevented)">(\d+)<', page))
    assert counts == {"claims-count": "6", "claim-members-created": "2", "claim-duplicates-prevented": "4"}
    assert Member.objects.filter(source_batch_id=batch.pk).count() == 2


def test_an_upstream_refusal_fails_the_member_with_a_reason_staff_can_read(client, club, sandbox, viewer):
    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=True)  # upstream changed; the mirror does not know yet

    response = open_and_claim(client, link_path(fields=PERCY))

    member = Member.objects.get()
    assert member.status == Member.Status.FAILED and "disabled" in member.failure_reason
    holder_page = client.get(response["Location"]).content.decode()
    assert "We could not create your pass." in holder_page and "disabled" not in holder_page
    staff = Client()
    staff.force_login(viewer)
    assert member.failure_reason in staff.get(reverse("members:member_detail", args=[member.pk])).content.decode()


def test_an_external_id_taken_upstream_tells_the_holder_they_are_enrolled_and_flags_the_member(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email")
    with client_from_settings() as smartpages:  # a pass made outside the portal
        smartpages.create_pass(
            {
                "passTemplateId": DEMO_TEMPLATE_ID,
                "externalIdentifier": "laura.loopy@example.com",
                "inputFields": [
                    {"identifier": "name", "value": "Laura"},
                    {"identifier": "email", "value": "laura.loopy@example.com"},
                ],
            }
        )

    response = open_and_claim(client, link_path(fields=LAURA))

    member = Member.objects.get()
    assert member.status == Member.Status.FAILED and member.upstream_conflict
    page = client.get(response["Location"])
    assert page.status_code == 200 and "You already have this pass" in page.content.decode()


def test_upstream_down_leaves_the_member_pending_and_the_page_refreshes_until_the_pass_is_ready(client, club, sandbox):
    sandbox.faults = Faults(error_rate=1.0, scope="passes")

    response = open_and_claim(client, link_path(fields=PERCY))

    member = Member.objects.get()
    assert member.status == Member.Status.PENDING and member.last_error
    waiting = client.get(response["Location"])
    body = waiting.content.decode()
    assert "Your pass is being prepared." in body and '<meta http-equiv="refresh" content="3">' in body
    assert waiting["Refresh"] == "3" and "503" not in body

    sandbox.faults = Faults()
    issuing.member_issue_retry(member=member)

    ready = client.get(response["Location"])
    assert "Refresh" not in ready and pass_id_on(ready.content.decode()) == str(Member.objects.get().pass_id)


def test_a_member_still_unreachable_after_every_attempt_ends_failed_with_the_reason(club, sandbox):
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    member = issuing.member_issue(template=club, values=PERCY, external_id=None, source="link").member
    while member.status == Member.Status.PENDING:
        member = issuing.member_issue_retry(member=member).member
        assert member.issue_attempts <= issuing.ISSUE_MAX_ATTEMPTS
    assert member.status == Member.Status.FAILED and "could not be reached" in member.failure_reason


def test_a_pending_member_whose_retry_was_lost_is_tried_again_by_the_sweep(club, sandbox):
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    waiting = issuing.member_issue(template=club, values=PERCY, external_id=None, source="link").member
    fresh = issuing.member_issue(template=club, values=LAURA, external_id=None, source="link").member
    sandbox.faults = Faults()
    # Its retry was due 2 s after the claim; a minute and a bit later nothing has tried it: the task was lost.
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at <= timezone.now() + timedelta(seconds=2)
    Member.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=61))

    assert issuing.member_issue_retry_stale() == 1

    assert Member.objects.get(pk=waiting.pk).status == Member.Status.ISSUED
    assert Member.objects.get(pk=fresh.pk).status == Member.Status.PENDING  # its own retry is still due


# --- languages and limits -------------------------------------------------------------------------------------
def test_the_holder_pages_speak_icelandic_when_the_browser_asks_for_it(client, club, sandbox):
    path = link_path(fields=PERCY)
    page = client.get(path, HTTP_ACCEPT_LANGUAGE="is,en;q=0.5").content.decode()
    assert 'lang="is"' in page and "Sækja kortið mitt" in page and "Þínar upplýsingar" in page
    assert client.get("/p/nope", HTTP_ACCEPT_LANGUAGE="is").content.decode().count("Hlekkur fannst ekki") >= 1

    english = client.get(path, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Get my pass" in english and "Sækja kortið mitt" not in english


def test_the_language_can_be_switched_on_the_claim_page(client, club, sandbox):
    path = link_path(fields=PERCY)
    assert "Get my pass" in client.get(path, HTTP_ACCEPT_LANGUAGE="en").content.decode()

    switched = client.post(reverse("set_language"), {"language": "is", "next": path}, HTTP_ACCEPT_LANGUAGE="en")

    assert switched.status_code == 302 and switched["Location"] == path
    assert "Sækja kortið mitt" in client.get(path, HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_too_many_claims_from_one_address_get_the_429_page(settings, club, sandbox):
    settings.CLAIM_RATE = "5/m"
    client = Client(REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")
    path = link_path(fields=PERCY)

    codes = [client.get(path).status_code for _ in range(7)]

    assert codes == [200] * 5 + [429] * 2
    limited = client.post(path, {"nonce": "x" * 24})
    assert limited.status_code == 429 and "Too many attempts" in limited.content.decode()
    assert Client(REMOTE_ADDR="10.255.255.254").get(path).status_code == 200  # another address is not affected
    assert Member.objects.count() == 0


# --- who may see an existing pass ----------------------------------------------------------------------------
@pytest.fixture
def school(db, sandbox):
    """Autofill by the school email, a MEMBER field the issuer's links leave for the holder to type."""
    template = mirror(add_member_field_template(sandbox))
    autofill.autofill_setting_change(template=template, source="email")
    return template


def typed_claim(client, template, *, name: str, email: str, external_id: str | None = None):
    """Open a link that carries only a name (and maybe an External ID) and type a kennitala and an email."""
    path = link_path(template.pk, {"name": name}, external_id=external_id)
    return open_and_claim(client, path, {"field_0": "010130-2989", "field_1": email})


def test_typing_someone_elses_email_says_already_enrolled_but_never_shows_their_pass(school, sandbox):
    victim, attacker = Client(), Client()
    enrolled = typed_claim(victim, school, name="Gunnar Nemandi", email="gunnar@skoli.is")
    assert enrolled.status_code == 302 and enrolled["Location"].startswith("/pass/")
    member = Member.objects.get()
    assert member.external_id == "gunnar@skoli.is" and member.status == Member.Status.ISSUED

    answer = typed_claim(attacker, school, name="Mallory", email=" Gunnar@Skoli.IS ")

    body = answer.content.decode()
    assert answer.status_code == 200 and not answer.has_header("Location")
    assert "You already have this pass" in body and "A pass has already been issued to you." in body
    assert str(member.pass_id) not in body and "/pass/" not in body and "qr-code" not in body
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1
    # The staff message, when set, is what the page says; still no pass.
    autofill.autofill_setting_change(
        template=school, source="email", already_enrolled_message="Talaðu við skrifstofuna."
    )
    again = typed_claim(attacker, school, name="Mallory", email="gunnar@skoli.is").content.decode()
    assert "Talaðu við skrifstofuna." in again and str(member.pass_id) not in again and "/pass/" not in again
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1


def test_the_holders_own_double_tap_still_shows_the_pass_their_typed_email_made(school, sandbox):
    path = link_path(school.pk, {"name": "Gunnar Nemandi"})
    form = {
        "nonce": nonce_of(Client().get(path).content.decode()),
        "field_0": "010130-2989",
        "field_1": "gunnar@skoli.is",
    }
    client = Client()

    first, second = client.post(path, form), client.post(path, form)

    assert first.status_code == second.status_code == 302 and first["Location"] == second["Location"]
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1


def test_an_external_id_the_link_itself_carries_shows_the_existing_pass(school, sandbox):
    typed_claim(Client(), school, name="Gunnar Nemandi", email="gunnar@skoli.is")
    member = Member.objects.get()
    # The issuer's link decides the External ID: by its explicit one, or by autofill from its own values.
    explicit = typed_claim(Client(), school, name="Gunnar", email="other@skoli.is", external_id="gunnar@skoli.is")
    carried = link_path(school.pk, {"name": "Gunnar", "schoolEmail": "Gunnar@skoli.is"})
    from_link_values = open_and_claim(Client(), carried, {"field_0": "010130-2989"})

    for response in (explicit, from_link_values):
        pass_page = f"/pass/{claims.pass_page_key(member=member)}?enrolled=1"
        assert response.status_code == 302 and response["Location"] == pass_page
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1


def test_a_holder_refused_once_gets_the_same_member_issued_when_they_claim_again(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email")
    path = link_path(fields=LAURA)
    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=True)  # upstream refuses; the mirror does not know

    first = open_and_claim(client, path)
    assert "We could not create your pass." in client.get(first["Location"]).content.decode()
    assert Member.objects.get().status == Member.Status.FAILED

    sandbox.update_template(DEMO_TEMPLATE_ID, disableIssue=False)  # fixed upstream
    second = open_and_claim(client, path)

    assert second.status_code == 302 and second["Location"] == first["Location"] + "?enrolled=1"
    member = Member.objects.get()
    assert member.status == Member.Status.ISSUED and member.external_id == "laura.loopy@example.com"
    assert [(c.old, c.new) for c in member.status_changes.all()] == [
        ("", "pending"),
        ("pending", "failed"),
        ("failed", "pending"),
        ("pending", "issued"),
    ]
    assert pass_id_on(client.get(second["Location"]).content.decode()) == str(member.pass_id)
    assert [p["id"] for p in sandbox.passes()] == [str(member.pass_id)] and upstream_posts(sandbox) == 2


def test_a_member_whose_external_id_smartpages_already_had_is_not_issued_again(client, club, sandbox):
    autofill.autofill_setting_change(template=club, source="email")
    with client_from_settings() as smartpages:  # a pass made outside the portal
        smartpages.create_pass(
            {
                "passTemplateId": DEMO_TEMPLATE_ID,
                "externalIdentifier": "laura.loopy@example.com",
                "inputFields": [
                    {"identifier": "name", "value": "Laura"},
                    {"identifier": "email", "value": "laura.loopy@example.com"},
                ],
            }
        )
    open_and_claim(client, link_path(fields=LAURA))
    posts = upstream_posts(sandbox)

    open_and_claim(client, link_path(fields=LAURA))

    member = Member.objects.get()
    assert member.status == Member.Status.FAILED and member.upstream_conflict and upstream_posts(sandbox) == posts


def test_staff_adding_a_capitalised_email_as_external_id_and_the_holders_link_find_one_member(
    client, club, sandbox, manager
):
    autofill.autofill_setting_change(template=club, source="email")
    added = issuing.member_add(
        template=club, values={"name": "Laura", "email": "laura@x.com"}, external_id=" Laura@X.com ", user=manager
    ).member
    assert added.external_id == "laura@x.com" and added.status == Member.Status.ISSUED

    by_explicit_id = open_and_claim(client, link_path(fields=PERCY, external_id="laura@x.com"))
    by_autofill = open_and_claim(client, link_path(fields={"name": "Laura", "email": "LAURA@x.com"}))

    for response in (by_explicit_id, by_autofill):
        assert response["Location"] == f"/pass/{claims.pass_page_key(member=added)}?enrolled=1"
    assert Member.objects.count() == 1 and upstream_posts(sandbox) == 1


def _card_with_a_unique_phone(sandbox) -> str:
    """The club card with its phone field unique upstream (autofill off), mirrored; its id."""
    card = sandbox.get_template(DEMO_TEMPLATE_ID)
    for field in card["inputFields"]:
        field["isUnique"] = field["identifier"] == "phone"
    template_id = sandbox.add_template(card, id=str(uuid.uuid4()), name="Klippikort")["id"]
    assert sync.templates_sync_all().status == "succeeded"
    return template_id


@pytest.mark.django_db
def test_a_link_claimed_again_on_a_template_with_a_unique_field_shows_the_pass_it_made(client, sandbox):
    """Autofill off, the phone field unique upstream: Percy's second click cannot make a second pass (the phone
    is taken), and used to get "This link cannot be used". The member holding every value of his link is his:
    he is shown that pass. A link with the same phone and another name is still refused: that is someone else."""
    template_id = _card_with_a_unique_phone(sandbox)
    percy = {"name": "Percy PassKit", "email": "percy@example.com", "phone": "+354 699 1234"}
    path = link_path(template_id, percy)
    creates = upstream_posts(sandbox)

    first = open_and_claim(Client(), path)
    again = open_and_claim(Client(), path)  # another visit: a new form, a new nonce

    assert first.status_code == again.status_code == 302
    assert again["Location"].split("?")[0] == first["Location"]
    assert again["Location"].endswith(f"?{ALREADY_ENROLLED_FLAG}=1")
    assert Member.objects.filter(template_id=template_id).count() == 1
    assert upstream_posts(sandbox) == creates + 1
    other = open_and_claim(Client(), link_path(template_id, percy | {"name": "Björk Guðmundsdóttir"}))
    assert other.status_code == 400
    assert "Another pass of this card already has the" in other.content.decode()
    assert Member.objects.filter(template_id=template_id).count() == 1


@pytest.mark.django_db
def test_a_unique_field_link_still_shows_its_pass_after_staff_fixed_a_typo_in_it(client, sandbox, manager):
    """The same card; Percy's name was misspelt in the issuer's file, and staff fixed it on his member page. His link
    still carries the misspelt name: it is the link his pass was made from, so he is shown his pass, not "This link
    cannot be used". Someone else's name with his phone is still refused."""
    template_id = _card_with_a_unique_phone(sandbox)
    misspelt = {"name": "Percy Paskit", "email": "percy@example.com", "phone": "+354 699 1234"}
    path = link_path(template_id, misspelt)
    first = open_and_claim(Client(), path)
    percy = Member.objects.get(template_id=template_id)
    passes.member_edit(member=percy, values={**percy.values, "name": "Percy PassKit"}, external_id="", user=manager)

    again = open_and_claim(Client(), path)

    assert again.status_code == 302 and again["Location"].split("?")[0] == first["Location"]
    other = open_and_claim(Client(), link_path(template_id, misspelt | {"name": "Björk Guðmundsdóttir"}))
    assert other.status_code == 400
    assert Member.objects.filter(template_id=template_id).count() == 1
